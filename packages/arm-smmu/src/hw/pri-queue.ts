// The PRI queue: PCIe page requests as the SMMU records them for software, with the overflow rule
// that discards new requests until software acknowledges.

import { Q_DISABLED, Q_FULL, SmmuOutputQueue } from "./event-queue.js";

/**
 * The PRI queue. A request arriving at a full queue is lost and starts an overflow (PROD.OVFLG
 * toggled); while the overflow is active (until software copies OVFLG to CONS.OVACKFLG) every
 * new request is lost too, even with space; the unit answers a lost Last request itself. A
 * disabled queue or one with an active PRIQ_ABT_ERR takes nothing (Q_DISABLED).
 *
 * @spec Arm SMMUv3 (IHI 0070) 8.1 (PRI queue overflow), 8.2
 */
export class SmmuPriQueue extends SmmuOutputQueue {
  /** Record `words` (4 words); Q_WRITTEN, Q_FULL (lost), Q_DISABLED or Q_ABORT. */
  push(words: Uint32Array): number {
    if (!this.enabled || this.aborted) return Q_DISABLED;
    if (this.overflowActive) {
      this.lost++;
      return Q_FULL;
    }
    if (this.full) {
      this.overflow();
      return Q_FULL;
    }
    return this.put(words);
  }
}
