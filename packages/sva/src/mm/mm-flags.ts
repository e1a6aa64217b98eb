// The numbers a process address space speaks in: mmap/mprotect protections, VMA permission flags,
// page-fault flags and page-fault results, with the kernel's values.

/** No access. @kernel include/uapi/asm-generic/mman-common.h PROT_NONE */
export const PROT_NONE = 0;
/** @kernel include/uapi/asm-generic/mman-common.h PROT_READ */
export const PROT_READ = 1;
/** @kernel include/uapi/asm-generic/mman-common.h PROT_WRITE */
export const PROT_WRITE = 2;
/** @kernel include/uapi/asm-generic/mman-common.h PROT_EXEC */
export const PROT_EXEC = 4;
/** Accepted and ignored, as by arch_validate_prot. @kernel include/uapi/asm-generic/mman-common.h PROT_SEM */
export const PROT_SEM = 8;

/** @kernel include/linux/mm.h VM_NONE */
export const VM_NONE = 0;
/** @kernel include/linux/mm.h VM_READ */
export const VM_READ = 1;
/** @kernel include/linux/mm.h VM_WRITE */
export const VM_WRITE = 2;
/** @kernel include/linux/mm.h VM_EXEC */
export const VM_EXEC = 4;
/** The permission bits of vm_flags. @kernel include/linux/mm.h VM_ACCESS_FLAGS */
export const VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC;

/** The fault is a write. @kernel include/linux/mm_types.h FAULT_FLAG_WRITE */
export const FAULT_FLAG_WRITE = 1 << 0;
/** The fault comes from user space. @kernel include/linux/mm_types.h FAULT_FLAG_USER */
export const FAULT_FLAG_USER = 1 << 6;
/** The fault is on another task's mm. @kernel include/linux/mm_types.h FAULT_FLAG_REMOTE */
export const FAULT_FLAG_REMOTE = 1 << 7;
/** The fault is an instruction fetch. @kernel include/linux/mm_types.h FAULT_FLAG_INSTRUCTION */
export const FAULT_FLAG_INSTRUCTION = 1 << 8;

/** No memory for the page or a table. @kernel include/linux/mm_types.h VM_FAULT_OOM */
export const VM_FAULT_OOM = 0x1;
/** @kernel include/linux/mm_types.h VM_FAULT_SIGBUS */
export const VM_FAULT_SIGBUS = 0x2;
/** @kernel include/linux/mm_types.h VM_FAULT_HWPOISON */
export const VM_FAULT_HWPOISON = 0x10;
/** @kernel include/linux/mm_types.h VM_FAULT_HWPOISON_LARGE */
export const VM_FAULT_HWPOISON_LARGE = 0x20;
/** The access is not allowed. @kernel include/linux/mm_types.h VM_FAULT_SIGSEGV */
export const VM_FAULT_SIGSEGV = 0x40;
/** @kernel include/linux/mm_types.h VM_FAULT_FALLBACK */
export const VM_FAULT_FALLBACK = 0x800;
/** Every result that means the fault was not resolved (0x873). @kernel include/linux/mm_types.h VM_FAULT_ERROR */
export const VM_FAULT_ERROR =
  VM_FAULT_OOM |
  VM_FAULT_SIGBUS |
  VM_FAULT_SIGSEGV |
  VM_FAULT_HWPOISON |
  VM_FAULT_HWPOISON_LARGE |
  VM_FAULT_FALLBACK;

/**
 * The VM_* permissions a PROT_* value asks for (the three bits map one to one).
 *
 * @kernel include/linux/mman.h calc_vm_prot_bits
 */
export function calcVmProtBits(prot: number): number {
  return prot & VM_ACCESS_FLAGS;
}
