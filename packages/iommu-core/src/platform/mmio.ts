// A register block as a driver sees it: 32-bit loads and stores at offsets, nothing else.

import { hiOf, join, loOf } from "./u64.js";

/**
 * Memory-mapped registers of a device model. A driver holds only this, never the model object, so
 * everything it does to the hardware goes through register accesses (and memory).
 *
 * @kernel include/asm-generic/io.h readl
 */
export interface Mmio {
  /** A 32-bit register load at byte offset `offset` (4-byte aligned). */
  read32(offset: number): number;
  /** A 32-bit register store. */
  write32(offset: number, value: number): void;
}

/** 64-bit register load as two 32-bit loads, low half first (as lo_hi_readq). */
export function mmioRead64(mmio: Mmio, offset: number): number {
  const lo = mmio.read32(offset) >>> 0;
  const hi = mmio.read32(offset + 4) >>> 0;
  return join(hi, lo);
}

/** 64-bit register store of a number below 2^53, low half first (as lo_hi_writeq). */
export function mmioWrite64(mmio: Mmio, offset: number, value: number): void {
  mmio.write32(offset, loOf(value));
  mmio.write32(offset + 4, hiOf(value));
}
