// Unit tests of the address space: every errno path of mmap / munmap / mprotect, demand faults,
// the CPU's own accesses, the order of notifier callbacks, flushes and frees, exit and the
// lifetime counts.

import {
  FrameAllocator,
  MM_FLUSH_ALL_END,
  MMU_NOTIFY_PROTECTION_VMA,
  MMU_NOTIFY_UNMAP,
  MmuNotifier,
  PhysMemory,
} from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { MMAP_BASE, Mm, type MmObserver } from "./mm.js";
import {
  FAULT_FLAG_INSTRUCTION,
  FAULT_FLAG_USER,
  FAULT_FLAG_WRITE,
  PROT_EXEC,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  VM_EXEC,
  VM_FAULT_OOM,
  VM_FAULT_SIGSEGV,
  VM_READ,
  VM_WRITE,
} from "./mm-flags.js";
import type { Vma } from "./vma.js";

/** The VMA at `va`, which the test knows is there. */
function vmaAt(mm: Mm, va: number): Vma {
  const v = mm.vmaLookup(va);
  if (v === null) throw new Error(`no VMA at 0x${va.toString(16)}`);
  return v;
}

const K = 0x1000;
const RW = PROT_READ | PROT_WRITE;

function machine(format: "x86-64" | "aarch64" = "x86-64", size = 0x100_0000) {
  const mem = new PhysMemory();
  const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size });
  const base = frames.liveFrames;
  const mm = new Mm({ name: "proc", mem, frames, format });
  return { mem, frames, mm, base };
}

/** Touch every page of [va, va + len) for reading (and writing with `write`). */
function touch(mm: Mm, va: number, len: number, write = false): void {
  for (let a = va; a < va + len; a += K) {
    const vma = mm.vmaLookup(a);
    if (vma === null) throw new Error(`no VMA at 0x${a.toString(16)}`);
    expect(mm.handleMmFault(vma, a, FAULT_FLAG_USER | (write ? FAULT_FLAG_WRITE : 0))).toBe(0);
  }
}

/**
 * A subscriber that logs every callback with what the world looks like at that moment: whether
 * `probe` is still translated and whether `probePa` (a frame) is still allocated.
 */
function recorder(mm: Mm, frames: FrameAllocator, log: string[], probe = -1) {
  let probePa = -1;
  const state = () =>
    `${mm.lookup(probe) >= 0 ? "mapped" : "clear"}/${probePa >= 0 && frames.isAllocated(probePa) ? "held" : "freed"}`;
  const sub = new MmuNotifier({
    release: () => log.push(`release ${state()}`),
    invalidateRangeStart: (_s, r) =>
      log.push(`start ${r.event} ${r.start.toString(16)}-${r.end.toString(16)} ${state()}`),
    invalidateRangeEnd: (_s, r) => log.push(`end ${r.event} ${state()}`),
    archInvalidateSecondaryTlbs: (_s, _m, start, end) =>
      log.push(
        `flush ${start.toString(16)}-${end === MM_FLUSH_ALL_END ? "all" : end.toString(16)} ${state()}`,
      ),
    freeNotifier: () => log.push("free-notifier"),
  });
  expect(mm.mmuNotifierRegister(sub)).toBe(0);
  return {
    sub,
    arm(pa: number) {
      probePa = pa;
    },
  };
}

function watchFrees(frames: FrameAllocator, log: string[]) {
  const free = frames.free.bind(frames);
  frames.free = (pa: number, order = 0) => {
    log.push(`free ${pa.toString(16)}`);
    return free(pa, order);
  };
}

function observer(log: string[]): MmObserver {
  return {
    pageMapped: (_m, va, pa, flags) =>
      log.push(`mapped ${va.toString(16)} ${pa.toString(16)} ${flags}`),
    pageUnmapped: (_m, va, _pa, op) => log.push(`unmapped ${va.toString(16)} ${op}`),
    pageProtected: (_m, va, _pa, flags, op) =>
      log.push(`protected ${va.toString(16)} ${flags} ${op}`),
  };
}

describe("Mm.create", () => {
  it("bad levels are EINVAL: x86-64 takes 4 or 5, AArch64 only 4", () => {
    const { mem, frames } = machine();
    expect(Mm.create({ name: "a", mem, frames, format: "aarch64", levels: 5 })).toBe("EINVAL");
    expect(Mm.create({ name: "a", mem, frames, format: "x86-64", levels: 3 as 4 })).toBe("EINVAL");
    expect(Mm.create({ name: "a", mem, frames, format: "riscv" as "x86-64" })).toBe("EINVAL");
    const mm = Mm.create({ name: "a", mem, frames, format: "x86-64", levels: 5 });
    expect(mm).toBeInstanceOf(Mm);
    expect((mm as Mm).vaBits).toBe(57);
  });

  it("no frame for the pgd is ENOMEM (and the constructor calls it a bug)", () => {
    const mem = new PhysMemory();
    const frames = new FrameAllocator(mem, { basePa: 0x10_0000, size: K });
    expect(frames.alloc(0)).toBe(0x10_0000);
    expect(Mm.create({ name: "a", mem, frames, format: "x86-64" })).toBe("ENOMEM");
    expect(() => new Mm({ name: "a", mem, frames, format: "x86-64" })).toThrow(/pgd/);
  });

  it("a new mm has one user, one count, a zeroed pgd and nothing mapped", () => {
    const { mm, frames, base } = machine("aarch64");
    expect([mm.users, mm.count, mm.iommuMm, mm.charge]).toEqual([1, 1, null, null]);
    expect(frames.liveFrames).toBe(base + 1);
    expect([mm.tablePages, mm.residentPages, mm.vmas.length]).toEqual([1, 0, 0]);
    expect([mm.pgtableFormat, mm.levels, mm.vaBits, mm.pageShift, mm.parange]).toEqual([
      "aarch64",
      4,
      48,
      12,
      5,
    ]);
  });
});

describe("mmap", () => {
  it("without fixed it takes the lowest gap at or above MMAP_BASE, and populates nothing", () => {
    const { mm } = machine();
    expect(mm.mmap(0, 3 * K, RW)).toBe(MMAP_BASE);
    expect(mm.mmap(0, K + 1, PROT_READ)).toBe(MMAP_BASE + 3 * K);
    expect(mm.munmap(MMAP_BASE, K)).toBe(0);
    expect(mm.mmap(0, K, PROT_EXEC)).toBe(MMAP_BASE);
    expect(mm.mmap(0, 2 * K, PROT_EXEC)).toBe(MMAP_BASE + 5 * K);
    expect(mm.residentPages).toBe(0);
    expect(mm.lookup(MMAP_BASE)).toBe(-1);
  });

  it("a free, aligned-up hint at or above mmap_min_addr is used; a taken one is not", () => {
    const { mm } = machine();
    expect(mm.mmap(0x4000_0001, K, RW)).toBe(0x4000_1000);
    expect(mm.mmap(0x4000_1000, K, RW)).toBe(MMAP_BASE);
    expect(mm.mmap(0x1000, K, RW)).toBe(MMAP_BASE + K);
  });

  it("adjacent mappings with equal permissions become one VMA", () => {
    const { mm } = machine();
    mm.mmap(0, K, RW);
    mm.mmap(0, K, RW);
    mm.mmap(0, K, PROT_READ);
    expect(mm.vmas.map((v) => [v.start, v.end, v.flags])).toEqual([
      [MMAP_BASE, MMAP_BASE + 2 * K, VM_READ | VM_WRITE],
      [MMAP_BASE + 2 * K, MMAP_BASE + 3 * K, VM_READ],
    ]);
  });

  it("fixed: an overlap is EEXIST, an unaligned address EINVAL, past TASK_SIZE ENOMEM", () => {
    const { mm } = machine();
    expect(mm.mmap(0x50_0000, 4 * K, RW, true)).toBe(0x50_0000);
    expect(mm.mmap(0x50_3000, 4 * K, RW, true)).toBe("EEXIST");
    expect(mm.mmap(0x4f_f000, 2 * K, RW, true)).toBe("EEXIST");
    expect(mm.mmap(0x60_0800, K, RW, true)).toBe("EINVAL");
    expect(mm.mmap(2 ** 47 - K, K, RW, true)).toBe("ENOMEM");
    expect(mm.mmap(2 ** 47 - 2 * K, K, RW, true)).toBe(2 ** 47 - 2 * K);
  });

  it("a zero length is EINVAL; a length beyond TASK_SIZE or with no gap left is ENOMEM", () => {
    const { mm } = machine();
    expect(mm.mmap(0, 0, RW)).toBe("EINVAL");
    expect(mm.mmap(0, 1.5, RW)).toBe("EINVAL");
    expect(mm.mmap(0, 2 ** 47, RW)).toBe("ENOMEM");
    expect(mm.mmap(0, 2 ** 47 - 4096 - MMAP_BASE + K, RW)).toBe("ENOMEM");
    expect(mm.mmap(0, 2 ** 47 - 4096 - MMAP_BASE, RW)).toBe(MMAP_BASE);
    // The search from MMAP_BASE finds nothing; a free hint below it still works.
    expect(mm.mmap(0, K, RW)).toBe("ENOMEM");
    expect(mm.mmap(0x20000, K, RW)).toBe(0x20000);
  });
});

describe("munmap", () => {
  it("EINVAL for an unaligned address, a zero length or a range beyond the VA space", () => {
    const { mm } = machine();
    expect(mm.munmap(MMAP_BASE + 1, K)).toBe("EINVAL");
    expect(mm.munmap(MMAP_BASE, 0)).toBe("EINVAL");
    expect(mm.munmap(2 ** 47, K)).toBe("EINVAL");
    expect(mm.munmap(2 ** 47 - 2 * K, 3 * K)).toBe("EINVAL");
    expect(mm.munmap(2 ** 47 - K, K)).toBe("EINVAL"); // TASK_SIZE is 2^47 - 4 KiB on x86-64
    expect(mm.munmap(2 ** 47 - 2 * K, K)).toBe(0);
  });

  it("unmapping holes is fine; a partial unmap splits the VMA", () => {
    const { mm } = machine();
    expect(mm.munmap(MMAP_BASE, 16 * K)).toBe(0);
    mm.mmap(0, 8 * K, RW);
    expect(mm.munmap(MMAP_BASE + 2 * K, 1)).toBe(0);
    expect(mm.vmas.map((v) => [v.start - MMAP_BASE, v.end - MMAP_BASE])).toEqual([
      [0, 2 * K],
      [3 * K, 8 * K],
    ]);
  });

  it("frees the data frames and the tables left empty, keeping the pgd", () => {
    const { mm, frames, base } = machine();
    mm.mmap(0, 4 * K, RW);
    touch(mm, MMAP_BASE, 4 * K, true);
    expect(mm.residentPages).toBe(4);
    expect(mm.tablePages).toBe(4);
    expect(frames.liveFrames).toBe(base + 8);
    expect(mm.munmap(MMAP_BASE, K)).toBe(0);
    expect([mm.residentPages, mm.tablePages, frames.liveFrames]).toEqual([3, 4, base + 7]);
    expect(mm.munmap(MMAP_BASE, 4 * K)).toBe(0);
    expect([mm.residentPages, mm.tablePages, frames.liveFrames]).toEqual([0, 1, base + 1]);
  });

  it("order: range start (entries still present), clear, range end, flush (frames still held), frees, observer", () => {
    const { mm, frames } = machine();
    const va = mm.mmap(0, 2 * K, RW) as number;
    touch(mm, va, 2 * K, true);
    const log: string[] = [];
    const pa = mm.lookup(va);
    const rec = recorder(mm, frames, log, va);
    rec.arm(pa);
    mm.observer = observer(log);
    watchFrees(frames, log);
    expect(mm.munmap(va, 2 * K)).toBe(0);
    const hex = (x: number) => x.toString(16);
    expect(log.slice(0, 3)).toEqual([
      `start ${MMU_NOTIFY_UNMAP} ${hex(va)}-${hex(va + 2 * K)} mapped/held`,
      `end ${MMU_NOTIFY_UNMAP} clear/held`,
      `flush ${hex(va)}-${hex(va + 2 * K)} clear/held`,
    ]);
    // Two data frames, then the three tables below the pgd, then the observer.
    expect(log.slice(3, 8).every((l) => l.startsWith("free "))).toBe(true);
    expect(log[3]).toBe(`free ${hex(pa)}`);
    expect(log.slice(8)).toEqual([`unmapped ${hex(va)} munmap`, `unmapped ${hex(va + K)} munmap`]);
  });

  it("a range with no present entry and no table to free gets range start/end but no flush", () => {
    const { mm, frames } = machine();
    const va = mm.mmap(0, 2 * K, RW) as number;
    const log: string[] = [];
    recorder(mm, frames, log, va);
    expect(mm.munmap(va, 2 * K)).toBe(0);
    expect(log.map((l) => l.split(" ")[0])).toEqual(["start", "end"]);
  });

  it("a table freed without a present leaf (a PROT_NONE page) still gets the flush", () => {
    const { mm, frames } = machine();
    const va = mm.mmap(0, K, RW) as number;
    touch(mm, va, K);
    expect(mm.mprotect(va, K, PROT_NONE)).toBe(0);
    const log: string[] = [];
    recorder(mm, frames, log, va);
    mm.observer = observer(log);
    expect(mm.munmap(va, K)).toBe(0);
    expect(log.map((l) => l.split(" ")[0])).toEqual(["start", "end", "flush", "unmapped"]);
    expect(mm.residentPages).toBe(0);
  });

  it.each(["x86-64", "aarch64"] as const)(
    "a PROT_NONE page is pte_present: unmapping it alone is flushed though its table stays (%s)",
    (format) => {
      const { mm, frames } = machine(format);
      const va = mm.mmap(0, 2 * K, RW) as number;
      touch(mm, va, 2 * K);
      expect(mm.mprotect(va, K, PROT_NONE)).toBe(0);
      const log: string[] = [];
      recorder(mm, frames, log, va);
      const tables = mm.tablePages;
      expect(mm.munmap(va, K)).toBe(0);
      expect(mm.tablePages).toBe(tables);
      const hex = (x: number) => x.toString(16);
      expect(log.map((l) => l.split(" ").slice(0, 2).join(" "))).toEqual([
        `start ${MMU_NOTIFY_UNMAP}`,
        `end ${MMU_NOTIFY_UNMAP}`,
        `flush ${hex(va)}-${hex(va + K)}`,
      ]);
    },
  );
});

describe("mprotect", () => {
  it("EINVAL for an unaligned address or unknown prot bits; a zero length is 0 (as the kernel)", () => {
    const { mm } = machine();
    mm.mmap(0, K, RW);
    expect(mm.mprotect(MMAP_BASE + 8, K, PROT_READ)).toBe("EINVAL");
    expect(mm.mprotect(MMAP_BASE, K, 0x40)).toBe("EINVAL");
    expect(mm.mprotect(MMAP_BASE, -1, PROT_READ)).toBe("EINVAL");
    expect(mm.mprotect(MMAP_BASE, 0, 0x40)).toBe(0);
    expect(mm.mprotect(MMAP_BASE, K, PROT_READ | 8)).toBe(0);
  });

  it("ENOMEM when the range starts in a hole, changing nothing", () => {
    const { mm } = machine();
    mm.mmap(MMAP_BASE + K, K, RW, true);
    expect(mm.mprotect(MMAP_BASE, 2 * K, PROT_READ)).toBe("ENOMEM");
    expect(mm.vmas[0].flags).toBe(VM_READ | VM_WRITE);
    expect(mm.mprotect(2 ** 47, K, PROT_READ)).toBe("ENOMEM");
  });

  it("ENOMEM at a hole further on, the VMAs before it keeping the change", () => {
    const { mm } = machine();
    mm.mmap(MMAP_BASE, 2 * K, RW, true);
    mm.mmap(MMAP_BASE + 3 * K, K, RW, true);
    expect(mm.mprotect(MMAP_BASE + K, 3 * K, PROT_READ)).toBe("ENOMEM");
    expect(mm.vmas.map((v) => [v.start - MMAP_BASE, v.end - MMAP_BASE, v.flags])).toEqual([
      [0, K, VM_READ | VM_WRITE],
      [K, 2 * K, VM_READ],
      [3 * K, 4 * K, VM_READ | VM_WRITE],
    ]);
  });

  it("splits VMAs, and merges them again when the permissions come back", () => {
    const { mm } = machine();
    mm.mmap(0, 4 * K, RW);
    expect(mm.mprotect(MMAP_BASE + K, 2 * K, PROT_READ | PROT_EXEC)).toBe(0);
    expect(mm.vmas.map((v) => v.flags)).toEqual([
      VM_READ | VM_WRITE,
      VM_READ | VM_EXEC,
      VM_READ | VM_WRITE,
    ]);
    expect(mm.mprotect(MMAP_BASE + K, 2 * K, RW)).toBe(0);
    expect(mm.vmas).toHaveLength(1);
  });

  it("a downgrade runs start, rewrite, end, flush, observer; the page keeps its frame", () => {
    const { mm, frames } = machine();
    const va = mm.mmap(0, 2 * K, RW) as number;
    touch(mm, va, K, true);
    const pa = mm.lookup(va);
    const log: string[] = [];
    recorder(mm, frames, log, va).arm(pa);
    mm.observer = observer(log);
    expect(mm.mprotect(va, 2 * K, PROT_READ)).toBe(0);
    const h = va.toString(16);
    const e = (va + 2 * K).toString(16);
    expect(log).toEqual([
      `start ${MMU_NOTIFY_PROTECTION_VMA} ${h}-${e} mapped/held`,
      `end ${MMU_NOTIFY_PROTECTION_VMA} mapped/held`,
      `flush ${h}-${e} mapped/held`,
      `protected ${h} ${VM_READ} mprotect`,
    ]);
    expect([mm.lookup(va), mm.lookupFlags(va)]).toEqual([pa, VM_READ]);
  });

  it.each(["x86-64", "aarch64"] as const)(
    "an upgrade of a present page is flushed too (pte_needs_flush, %s); PROT_NONE hides the page from the hardware and keeps its data; making it accessible again needs no flush",
    (format) => {
      const { mm, frames } = machine(format);
      const va = mm.mmap(0, K, PROT_READ) as number;
      expect(mm.write(va, new Uint8Array([1]))).toBe("EFAULT");
      touch(mm, va, K);
      const log: string[] = [];
      recorder(mm, frames, log, va);
      expect(mm.mprotect(va, K, RW)).toBe(0);
      expect(log.map((l) => l.split(" ")[0])).toEqual(["start", "end", "flush"]);
      expect(mm.write(va + 5, new Uint8Array([42]))).toBe(0);
      log.length = 0;
      expect(mm.mprotect(va, K, PROT_NONE)).toBe(0);
      expect(log.map((l) => l.split(" ")[0])).toEqual(["start", "end", "flush"]);
      expect([mm.lookup(va), mm.lookupFlags(va), mm.residentPages]).toEqual([-1, 0, 1]);
      expect(mm.read(va, new Uint8Array(1))).toBe("EFAULT");
      log.length = 0;
      expect(mm.mprotect(va, K, PROT_READ)).toBe(0);
      expect(log.map((l) => l.split(" ")[0])).not.toContain("flush");
      const b = new Uint8Array(1);
      expect(mm.read(va + 5, b)).toBe(0);
      expect(b[0]).toBe(42);
    },
  );

  it("a change of VMA flags with no page behind it calls no notifier", () => {
    const { mm, frames } = machine();
    mm.mmap(0, 2 * K, RW);
    const log: string[] = [];
    recorder(mm, frames, log);
    expect(mm.mprotect(MMAP_BASE, 2 * K, PROT_READ)).toBe(0);
    expect(log).toEqual([]);
  });
});

describe("handleMmFault", () => {
  it("maps one zeroed frame with the VMA's permissions, with no notifier call; a second fault maps nothing", () => {
    const { mm, frames, mem } = machine();
    const va = mm.mmap(0, 2 * K, PROT_READ | PROT_EXEC) as number;
    const log: string[] = [];
    recorder(mm, frames, log);
    mm.observer = observer(log);
    const vma = vmaAt(mm, va);
    expect(mm.handleMmFault(vma, va + 0x123, FAULT_FLAG_USER | FAULT_FLAG_INSTRUCTION)).toBe(0);
    const pa = mm.lookup(va);
    expect(log).toEqual([`mapped ${va.toString(16)} ${pa.toString(16)} ${VM_READ | VM_EXEC}`]);
    expect(mem.read32(pa + 0x100)).toBe(0);
    expect(mm.lookupFlags(va)).toBe(VM_READ | VM_EXEC);
    const live = frames.liveFrames;
    expect(mm.handleMmFault(vma, va, FAULT_FLAG_USER)).toBe(0);
    expect(frames.liveFrames).toBe(live);
    expect(mm.lookup(va + K)).toBe(-1);
  });

  it("a fault without the permission is VM_FAULT_SIGSEGV", () => {
    const { mm } = machine();
    const ro = vmaAt(mm, mm.mmap(0, K, PROT_READ) as number);
    const none = vmaAt(mm, mm.mmap(0, K, PROT_NONE) as number);
    const wo = vmaAt(mm, mm.mmap(0, K, PROT_WRITE) as number);
    expect(mm.handleMmFault(ro, ro.start, FAULT_FLAG_WRITE)).toBe(VM_FAULT_SIGSEGV);
    expect(mm.handleMmFault(ro, ro.start, FAULT_FLAG_INSTRUCTION)).toBe(VM_FAULT_SIGSEGV);
    expect(mm.handleMmFault(none, none.start, 0)).toBe(VM_FAULT_SIGSEGV);
    // A read of a write-only VMA is allowed (vma_is_accessible) and maps it readable and writable.
    expect(mm.handleMmFault(wo, wo.start, FAULT_FLAG_USER)).toBe(0);
    expect(mm.lookupFlags(wo.start)).toBe(VM_READ | VM_WRITE);
    expect(mm.residentPages).toBe(1);
  });

  it("an address outside the VMA, or a VMA that is not (any more) this mm's, is VM_FAULT_SIGSEGV", () => {
    const { mm } = machine();
    const vma = vmaAt(mm, mm.mmap(0, 2 * K, RW) as number);
    expect(mm.handleMmFault(vma, vma.end, 0)).toBe(VM_FAULT_SIGSEGV);
    mm.munmap(vma.start + K, K);
    expect(mm.handleMmFault(vma, vma.start, 0)).toBe(VM_FAULT_SIGSEGV);
    const other = machine().mm;
    const theirs = vmaAt(other, other.mmap(0, K, RW) as number);
    expect(mm.handleMmFault(theirs, theirs.start, 0)).toBe(VM_FAULT_SIGSEGV);
  });

  it("VM_FAULT_OOM when no frame is left for a table or the page", () => {
    // pgd + 4 frames: three tables and one page.
    const { mm, frames } = machine("x86-64", 5 * K);
    const vma = vmaAt(mm, mm.mmap(0, 2 * K, RW) as number);
    expect(mm.handleMmFault(vma, vma.start, FAULT_FLAG_WRITE)).toBe(0);
    expect(mm.handleMmFault(vma, vma.start + K, FAULT_FLAG_WRITE)).toBe(VM_FAULT_OOM);
    expect(mm.lookup(vma.start + K)).toBe(-1);
    const far = vmaAt(mm, mm.mmap(0x7000_0000_0000, K, RW, true) as number);
    expect(mm.handleMmFault(far, far.start, FAULT_FLAG_WRITE)).toBe(VM_FAULT_OOM);
    expect([mm.tablePages, mm.residentPages, frames.freeFrames]).toEqual([4, 1, 0]);
    expect(mm.munmap(vma.start, 2 * K)).toBe(0);
    expect(frames.freeFrames).toBe(4);
    expect(mm.handleMmFault(far, far.start, FAULT_FLAG_WRITE)).toBe(0);
  });
});

describe("the process's own accesses", () => {
  it("write then read round-trips across pages, faulting them in", () => {
    const { mm } = machine("aarch64");
    const va = mm.mmap(0, 3 * K, RW) as number;
    const src = Uint8Array.from({ length: 2 * K + 5 }, (_, i) => i & 0xff);
    expect(mm.write(va + K - 5, src)).toBe(0);
    expect(mm.residentPages).toBe(3);
    const dst = new Uint8Array(src.length);
    expect(mm.read(va + K - 5, dst)).toBe(0);
    expect(dst).toEqual(src);
  });

  it("EFAULT without a VMA or the permission; the pages before the failing one were done", () => {
    const { mm } = machine();
    const va = mm.mmap(0, K, RW) as number;
    expect(mm.read(va - K, new Uint8Array(4))).toBe("EFAULT");
    expect(mm.write(va + K - 2, new Uint8Array([7, 7, 7, 7]))).toBe("EFAULT");
    const b = new Uint8Array(2);
    expect(mm.read(va + K - 2, b)).toBe(0);
    expect([...b]).toEqual([7, 7]);
    mm.mprotect(va, K, PROT_READ);
    expect(mm.write(va, new Uint8Array([1]))).toBe("EFAULT");
    expect(mm.read(-1, b)).toBe("EFAULT");
  });
});

describe("mmu notifiers and lifetime", () => {
  it("register takes a count and refuses a subscription registered twice", () => {
    const { mm, frames } = machine();
    const { sub } = recorder(mm, frames, []);
    expect(mm.count).toBe(2);
    expect(sub.mm).toBe(mm);
    expect(mm.mmuNotifierRegister(sub)).toBe("EINVAL");
    const other = machine().mm;
    expect(other.mmuNotifierRegister(sub)).toBe("EINVAL");
    expect(other.mmuNotifierUnregister(sub)).toBe("EINVAL");
    expect(other.mmuNotifierPut(sub)).toBe("EINVAL");
  });

  it("unregister before exit calls release once and drops the count; put calls freeNotifier instead", () => {
    const { mm, frames } = machine();
    const log: string[] = [];
    const a = recorder(mm, frames, log).sub;
    const b = recorder(mm, frames, log).sub;
    expect(mm.mmuNotifierUnregister(a)).toBe(0);
    expect(mm.mmuNotifierPut(b)).toBe(0);
    expect(log.map((l) => l.split(" ")[0])).toEqual(["release", "free-notifier"]);
    expect([mm.count, a.mm, b.mm]).toEqual([1, null, null]);
    expect(mm.mmuNotifierUnregister(a)).toBe("EINVAL");
  });

  it("exit releases every subscription before any page is unmapped, then frees all tables below the pgd", () => {
    const { mm, frames, base } = machine();
    const va = mm.mmap(0, 2 * K, RW) as number;
    touch(mm, va, 2 * K, true);
    const log: string[] = [];
    const pa = mm.lookup(va);
    const rec = recorder(mm, frames, log, va);
    rec.arm(pa);
    mm.observer = observer(log);
    mm.exit();
    expect(log[0]).toBe("release mapped/held");
    expect(log.slice(1)).toEqual([
      `unmapped ${va.toString(16)} exit`,
      `unmapped ${(va + K).toString(16)} exit`,
    ]);
    expect([mm.users, mm.count, mm.tablePages, mm.residentPages, mm.vmas.length]).toEqual([
      0, 1, 1, 0, 0,
    ]);
    expect(frames.liveFrames).toBe(base + 1);
    // After exit: no new mappings, no new subscriptions, no more users.
    expect(mm.mmgetNotZero()).toBe(false);
    expect(mm.mmap(0, K, RW)).toBe("ENOMEM");
    expect(mm.mmuNotifierRegister(new MmuNotifier({}))).toBe("EINVAL");
    expect(mm.munmap(va, K)).toBe(0);
    expect(mm.mprotect(va, K, PROT_READ)).toBe("ENOMEM");
    mm.exit();
    expect(mm.count).toBe(1);
  });

  it("put and unregister after release succeed without a second release; the last mmdrop frees the pgd, then calls onMmdrop (mm_free_pgd before mm_pasid_drop), once", () => {
    const { mm, frames, base } = machine("aarch64");
    const log: string[] = [];
    const a = recorder(mm, frames, log).sub;
    const b = recorder(mm, frames, log).sub;
    let dropped = 0;
    mm.onMmdrop = (m) => {
      dropped++;
      expect(m).toBe(mm);
      expect([frames.isAllocated(mm.pgd), mm.tablePages]).toEqual([false, 0]);
    };
    mm.exit();
    expect(log).toEqual(["release clear/freed", "release clear/freed"]);
    expect([mm.count, dropped, frames.isAllocated(mm.pgd)]).toEqual([2, 0, true]);
    expect(mm.mmuNotifierPut(a)).toBe(0);
    expect([mm.count, dropped, frames.isAllocated(mm.pgd)]).toEqual([1, 0, true]);
    expect(mm.mmuNotifierUnregister(b)).toBe(0);
    expect(log).toEqual(["release clear/freed", "release clear/freed", "free-notifier"]);
    expect([mm.count, dropped, frames.isAllocated(mm.pgd), mm.tablePages]).toEqual([
      0,
      1,
      false,
      0,
    ]);
    expect(frames.liveFrames).toBe(base);
    expect(mm.lookup(0)).toBe(-1);
  });

  it("an extra user keeps the address space alive past the task's exit", () => {
    const { mm, frames, base } = machine();
    const va = mm.mmap(0, K, RW) as number;
    touch(mm, va, K, true);
    expect(mm.mmgetNotZero()).toBe(true);
    mm.exit();
    expect([mm.users, mm.lookup(va) >= 0]).toEqual([1, true]);
    mm.mmput();
    expect([mm.users, mm.lookup(va), frames.liveFrames]).toEqual([0, -1, base]);
  });

  it("count underflow and mmput without a user are model bugs", () => {
    const { mm } = machine();
    mm.exit();
    expect(() => mm.mmput()).toThrow(/mmput/);
    expect(() => mm.mmdrop()).toThrow(/mmdrop/);
  });

  it("a flush during exit would be a whole-space one, but the chain is empty by then", () => {
    const { mm, frames } = machine();
    const va = mm.mmap(0, K, RW) as number;
    touch(mm, va, K);
    const log: string[] = [];
    recorder(mm, frames, log);
    mm.exit();
    expect(log.every((l) => l.startsWith("release"))).toBe(true);
  });
});

describe("MmObserver.frameFreeing", () => {
  it("hears of every page and page-table frame munmap frees, after the flush and while the frame is still allocated", () => {
    const { mm, frames } = machine();
    const va = mm.mmap(0, 2 * K, RW) as number;
    touch(mm, va, 2 * K, true);
    const pages = [mm.lookup(va), mm.lookup(va + K)];
    const log: string[] = [];
    let flushed = false;
    mm.mmuNotifierRegister(
      new MmuNotifier({
        archInvalidateSecondaryTlbs: () => {
          flushed = true;
        },
      }),
    );
    const freed: number[] = [];
    mm.observer = {
      pageMapped: () => {},
      pageUnmapped: () => {},
      pageProtected: () => {},
      frameFreeing: (m, pa) => {
        expect(m).toBe(mm);
        log.push(
          `${flushed ? "after" : "before"} flush, ${frames.isAllocated(pa) ? "held" : "freed"}`,
        );
        freed.push(pa);
      },
    };
    const tablesBefore = mm.tablePages;
    expect(mm.munmap(va, 2 * K)).toBe(0);
    // The two pages, then the page-table pages left empty (all below the pgd).
    expect(freed.slice(0, 2).sort()).toEqual([...pages].sort());
    expect(freed.length).toBe(2 + tablesBefore - mm.tablePages);
    expect(new Set(log)).toEqual(new Set(["after flush, held"]));
  });
});
