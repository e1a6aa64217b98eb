// Property test: random sequences of mmap / munmap / mprotect / CPU reads and writes (demand
// faults) / exit against a page-by-page reference model, for x86-64 at 4 and 5 levels and AArch64.
// After every step the tables agree with the reference; every page whose entry was cleared or
// lost a permission lies in a flush range delivered before its frame was freed; after exit and
// the last mmdrop no frame is left.

import { FrameAllocator, MmuNotifier, PhysMemory } from "@iommu-sim/iommu-core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MMAP_BASE, Mm, type MmObserver, VM_READ, VM_WRITE } from "../src/mm/index.js";

const K = 4096;
/** Pages of the windows the operations aim at. */
const WINDOW = 96;

interface Config {
  format: "x86-64" | "aarch64";
  levels: 4 | 5;
  /** A second window for fixed mappings at the top of the user range. */
  high: number;
}

const CONFIGS: Config[] = [
  { format: "x86-64", levels: 4, high: 2 ** 47 - K - WINDOW * K },
  { format: "x86-64", levels: 5, high: 2 ** 56 - K - WINDOW * K },
  { format: "aarch64", levels: 4, high: 2 ** 48 - WINDOW * K },
];

type Op =
  | { kind: "mmap"; fixed: boolean; high: boolean; page: number; pages: number; prot: number }
  | { kind: "munmap"; high: boolean; page: number; pages: number }
  | { kind: "mprotect"; high: boolean; page: number; pages: number; prot: number }
  | { kind: "write"; high: boolean; page: number; pick: number; offset: number; value: number }
  | { kind: "read"; high: boolean; page: number; pick: number; offset: number }
  | { kind: "exit" };

const where = { high: fc.boolean(), page: fc.integer({ min: 0, max: WINDOW - 1 }) };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("mmap" as const),
      fixed: fc.boolean(),
      ...where,
      pages: fc.integer({ min: 1, max: 24 }),
      prot: fc.integer({ min: 0, max: 7 }),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("munmap" as const),
      ...where,
      pages: fc.integer({ min: 1, max: 40 }),
    }),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("mprotect" as const),
      ...where,
      pages: fc.integer({ min: 1, max: 40 }),
      prot: fc.integer({ min: 0, max: 7 }),
    }),
  },
  {
    weight: 12,
    arbitrary: fc.record({
      kind: fc.constant("write" as const),
      ...where,
      pick: fc.integer({ min: -1, max: 1 << 16 }),
      offset: fc.integer({ min: 0, max: K - 1 }),
      value: fc.integer({ min: 1, max: 255 }),
    }),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("read" as const),
      ...where,
      pick: fc.integer({ min: -1, max: 1 << 16 }),
      offset: fc.integer({ min: 0, max: K - 1 }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "exit" as const }) },
);

/** The reference: VMA flags and backing frame per page, and the bytes written. */
class Ref {
  readonly vma = new Map<number, number>();
  readonly frame = new Map<number, number>();
  readonly bytes = new Map<number, number>();

  /** VM_* permissions a present page's entry grants (0: not present for the hardware). */
  hwFlags(va: number): number {
    const f = this.vma.get(va) ?? 0;
    return f === 0 ? 0 : f | VM_READ;
  }

  /** The VMAs the pages make: maximal runs of adjacent pages with equal flags. */
  runs(): number[][] {
    const out: number[][] = [];
    for (const va of [...this.vma.keys()].sort((a, b) => a - b)) {
      const flags = this.vma.get(va) as number;
      const last = out[out.length - 1];
      if (last !== undefined && last[1] === va && last[2] === flags) last[1] = va + K;
      else out.push([va, va + K, flags]);
    }
    return out;
  }

  lowestGap(pages: number, limit: number): number {
    let cand = MMAP_BASE;
    for (;;) {
      if (cand + pages * K > limit) return -1;
      let clash = -1;
      for (let i = 0; i < pages; i++) if (this.vma.has(cand + i * K)) clash = cand + i * K;
      if (clash < 0) return cand;
      cand = clash + K;
    }
  }
}

/** How much the random runs exercised, so a weakened generator cannot pass unnoticed. */
const stats = { faults: 0, flushedPages: 0, freedAfterFlush: 0, protNone: 0, exits: 0 };

type Ev = { kind: "start" | "end" | "flush" | "release" | "free"; a: number; b: number };

function run(cfg: Config, ops: Op[]): void {
  const mem = new PhysMemory();
  const frames = new FrameAllocator(mem, { basePa: 2 ** 40, size: 0x100_0000 });
  const baseline = frames.liveFrames;
  const mm = new Mm({ name: "prop", mem, frames, format: cfg.format, levels: cfg.levels });
  const taskSize = mm.userEnd;
  const ref = new Ref();
  const ev: Ev[] = [];
  const free = frames.free.bind(frames);
  frames.free = (pa: number, order = 0) => {
    ev.push({ kind: "free", a: pa, b: 0 });
    return free(pa, order);
  };
  const sub = new MmuNotifier({
    release: () => ev.push({ kind: "release", a: 0, b: 0 }),
    invalidateRangeStart: (_s, r) => ev.push({ kind: "start", a: r.start, b: r.end }),
    invalidateRangeEnd: (_s, r) => ev.push({ kind: "end", a: r.start, b: r.end }),
    archInvalidateSecondaryTlbs: (_s, _m, start, end) => {
      expect(start % K).toBe(0);
      expect(end % K).toBe(0);
      ev.push({ kind: "flush", a: start, b: end });
    },
  });
  expect(mm.mmuNotifierRegister(sub)).toBe(0);
  // What the observer reports, checked against the reference as it comes.
  const mapped: [number, number][] = [];
  const observer: MmObserver = {
    pageMapped: (_m, va, pa, flags) => {
      expect(ref.frame.has(va)).toBe(false);
      expect(flags).toBe(ref.hwFlags(va));
      mapped.push([va, pa]);
    },
    pageUnmapped: (_m, va, pa) => expect(ref.frame.get(va)).toBe(pa),
    pageProtected: (_m, va, pa) => expect(ref.frame.get(va)).toBe(pa),
  };
  mm.observer = observer;

  const addrOf = (o: { high: boolean; page: number }) =>
    (o.high ? cfg.high : MMAP_BASE) + o.page * K;

  let exited = false;
  for (const o of ops) {
    if (exited) {
      // The address space is gone: nothing maps, nothing is there, the task has no reference.
      const at = o.kind === "exit" ? 0 : addrOf(o);
      if (o.kind === "mmap") expect(mm.mmap(at, o.pages * K, o.prot, o.fixed)).toBe("ENOMEM");
      else if (o.kind === "munmap") expect(mm.munmap(at, K)).toBe(0);
      else if (o.kind === "mprotect") expect(mm.mprotect(at, K, o.prot)).toBe("ENOMEM");
      else if (o.kind === "exit") mm.exit();
      else expect(mm.read(at, new Uint8Array(1))).toBe("EFAULT");
      expect(mm.lookup(at)).toBe(-1);
      continue;
    }
    // The hardware's view of every page with a frame, before the operation.
    const before = new Map<number, [number, number]>();
    for (const va of ref.frame.keys()) before.set(va, [mm.lookup(va), mm.lookupFlags(va)]);
    const dataFrames = new Set(ref.frame.values());
    ev.length = 0;
    mapped.length = 0;

    if (o.kind === "mmap") {
      const addr = o.fixed ? addrOf(o) : 0;
      const r = mm.mmap(addr, o.pages * K, o.prot, o.fixed);
      let want: number | string;
      if (o.fixed) {
        let clash = false;
        for (let i = 0; i < o.pages; i++) clash ||= ref.vma.has(addr + i * K);
        want = addr + o.pages * K > taskSize ? "ENOMEM" : clash ? "EEXIST" : addr;
      } else {
        want = ref.lowestGap(o.pages, taskSize);
      }
      expect(r).toBe(want);
      if (typeof r === "number") for (let i = 0; i < o.pages; i++) ref.vma.set(r + i * K, o.prot);
      expect(ev).toEqual([]);
    } else if (o.kind === "munmap") {
      const addr = addrOf(o);
      const end = Math.min(addr + o.pages * K, taskSize);
      expect(mm.munmap(addr, end - addr)).toBe(end > addr ? 0 : "EINVAL");
      for (let va = addr; va < end; va += K) {
        ref.vma.delete(va);
        ref.frame.delete(va);
        ref.bytes.delete(va);
      }
    } else if (o.kind === "mprotect") {
      const addr = addrOf(o);
      const end = addr + o.pages * K;
      let va = addr;
      while (va < end && ref.vma.has(va)) {
        ref.vma.set(va, o.prot);
        va += K;
      }
      expect(mm.mprotect(addr, end - addr, o.prot)).toBe(va < end ? "ENOMEM" : 0);
    } else if (o.kind === "write" || o.kind === "read") {
      // Mostly a page of some VMA (pick >= 0), else anywhere in the window.
      const keys = [...ref.vma.keys()];
      const page = o.pick >= 0 && keys.length > 0 ? keys[o.pick % keys.length] : addrOf(o);
      // Above 2^53 a number holds only multiples of 8 or 16: byte addresses there are not exact.
      const va = page + (page >= 2 ** 53 ? o.offset & ~15 : o.offset);
      const f = ref.vma.get(page);
      const ok = f !== undefined && (o.kind === "write" ? (f & VM_WRITE) !== 0 : f !== 0);
      const buf = new Uint8Array([o.kind === "write" ? o.value : 0]);
      const r = o.kind === "write" ? mm.write(va, buf) : mm.read(va, buf);
      expect(r).toBe(ok ? 0 : "EFAULT");
      if (ok) {
        if (!ref.frame.has(page)) {
          expect(mapped.map((m) => m[0])).toEqual([page]);
          ref.frame.set(page, mapped[0][1]);
          stats.faults++;
        } else {
          expect(mapped).toEqual([]);
        }
        const key = va;
        if (o.kind === "write") ref.bytes.set(key, o.value);
        else expect(buf[0]).toBe(ref.bytes.get(key) ?? 0);
        // Making a page present needs no notifier at all.
        expect(ev.filter((e) => e.kind !== "free")).toEqual([]);
      }
    } else {
      mm.exit();
      exited = true;
      stats.exits++;
      // Release first, then the frees, and no notifier call after the release.
      expect(ev[0]?.kind ?? "release").toBe("release");
      expect(ev.slice(1).every((e) => e.kind === "free")).toBe(true);
      ref.vma.clear();
      ref.frame.clear();
      ref.bytes.clear();
    }

    // Cleared or downgraded pages: covered by a flush delivered before their frame was freed.
    if (!exited) {
      for (const [va, [pa, flags]] of before) {
        const nowPa = mm.lookup(va);
        const nowFlags = mm.lookupFlags(va);
        if (pa < 0 || (nowPa === pa && (flags & ~nowFlags) === 0)) continue;
        const flush = ev.findIndex((e) => e.kind === "flush" && e.a <= va && va < e.b);
        expect(
          flush,
          `page 0x${va.toString(16)} lost its entry without a flush`,
        ).toBeGreaterThanOrEqual(0);
        const freed = ev.findIndex((e) => e.kind === "free" && e.a === pa);
        stats.flushedPages++;
        if (nowPa < 0 && ref.frame.get(va) === pa) stats.protNone++;
        if (freed >= 0) {
          expect(flush).toBeLessThan(freed);
          stats.freedAfterFlush++;
        }
      }
      // A freed table follows a flush too (a PROT_NONE page's frame need not: the hardware
      // lost sight of it at its mprotect's flush); every flush follows the range end.
      const firstTableFree = ev.findIndex((e) => e.kind === "free" && !dataFrames.has(e.a));
      if (firstTableFree >= 0) {
        expect(ev.slice(0, firstTableFree).some((e) => e.kind === "flush")).toBe(true);
      }
      const firstFlush = ev.findIndex((e) => e.kind === "flush");
      if (firstFlush >= 0)
        expect(ev.slice(0, firstFlush).map((e) => e.kind)).toEqual(["start", "end"]);
    }

    // The tables agree with the reference on every page with a frame, every page that had one,
    // and the pages the operation named; the VMAs are the reference's pages in maximal runs.
    const check = new Set<number>([...ref.frame.keys(), ...before.keys()]);
    if (o.kind !== "exit") {
      const pages = "pages" in o ? o.pages : 1;
      for (let i = 0; i < pages; i++) check.add(addrOf(o) + i * K);
    }
    for (const va of check) {
      if (va >= taskSize) continue;
      const pa = ref.frame.get(va);
      const flags = ref.hwFlags(va);
      const present = pa !== undefined && flags !== 0;
      const off = va >= 2 ** 53 ? 16 : 5;
      expect(mm.lookup(va + off), `page 0x${va.toString(16)}`).toBe(present ? pa + off : -1);
      expect(mm.lookupFlags(va)).toBe(present ? flags : 0);
    }
    expect(mm.vmas.map((v) => [v.start, v.end, v.flags])).toEqual(ref.runs());
    expect(mm.residentPages).toBe(ref.frame.size);
  }
  if (!exited) mm.exit();
  expect([mm.users, mm.residentPages, mm.tablePages]).toEqual([0, 0, 1]);
  expect(frames.liveFrames).toBe(baseline + 1);
  // The subscription's count keeps the pgd until it goes.
  expect(mm.mmuNotifierUnregister(sub)).toBe(0);
  expect([mm.count, mm.tablePages]).toEqual([0, 0]);
  expect(frames.liveFrames).toBe(baseline);
}

describe("Mm against a reference model", () => {
  for (const cfg of CONFIGS) {
    it(`${cfg.format} ${cfg.levels}-level: lookups agree, flushes precede frees, nothing leaks`, () => {
      fc.assert(
        fc.property(fc.array(opArb, { minLength: 10, maxLength: 80, size: "max" }), (ops) =>
          run(cfg, ops),
        ),
        { seed: 0x6d6d, numRuns: 200 },
      );
    });
  }

  it("the runs reached faults, flushed downgrades, PROT_NONE pages, frees and exits", () => {
    expect(stats.faults).toBeGreaterThan(2000);
    expect(stats.flushedPages).toBeGreaterThan(400);
    expect(stats.freedAfterFlush).toBeGreaterThan(250);
    expect(stats.protNone).toBeGreaterThan(20);
    expect(stats.exits).toBeGreaterThan(250);
  });
});
