// The kernel's errno numbers, by name: the error vocabulary of every iommu-sim package.

/**
 * Errno names and their numbers in Linux (`include/uapi/asm-generic/errno-base.h`,
 * `include/uapi/asm-generic/errno.h`, and the kernel-internal codes of `include/linux/errno.h`).
 * A function that mirrors an int-returning kernel function returns its value or one of these
 * names, typed per function to the errnos the kernel documents for it.
 *
 * @kernel include/uapi/asm-generic/errno-base.h
 */
export const ERRNO = Object.freeze({
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  ENOTBLK: 15,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  EDOM: 33,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOMSG: 42,
  EIDRM: 43,
  ENODATA: 61,
  ETIME: 62,
  ENOLINK: 67,
  EPROTO: 71,
  EBADMSG: 74,
  EOVERFLOW: 75,
  EILSEQ: 84,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ECONNRESET: 104,
  ENOBUFS: 105,
  ETIMEDOUT: 110,
  EALREADY: 114,
  EINPROGRESS: 115,
  ESTALE: 116,
  EREMOTEIO: 121,
  EDQUOT: 122,
  EMEDIUMTYPE: 124,
  ECANCELED: 125,
  EOWNERDEAD: 130,
  EHWPOISON: 133,
  // Kernel-internal codes, never seen by user space.
  ERESTARTSYS: 512,
  EPROBE_DEFER: 517,
  ENOTSUPP: 524,
} as const);

/** An errno name, e.g. `'ENOSPC'`. */
export type Errno = keyof typeof ERRNO;

const NAME_BY_NUMBER: ReadonlyMap<number, Errno> = new Map(
  (Object.keys(ERRNO) as Errno[]).map((name) => [ERRNO[name], name]),
);

/** True when `value` is an errno name (a failed result), so `isErrno(r)` narrows a result. */
export function isErrno(value: unknown): value is Errno {
  return typeof value === "string" && Object.hasOwn(ERRNO, value);
}

/** The kernel's number for an errno name (`errnoNumber('ENOSPC') === 28`). */
export function errnoNumber(name: Errno): number {
  return ERRNO[name];
}

/**
 * The errno name for a kernel number, positive or negative as the kernel returns it
 * (`errnoName(-28) === 'ENOSPC'`); `undefined` for a number the table does not hold.
 */
export function errnoName(n: number): Errno | undefined {
  return NAME_BY_NUMBER.get(n < 0 ? -n : n);
}
