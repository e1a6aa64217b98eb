// The default scenario of `iommu-sim run`: several devices on the mock IOMMU doing DMA through the
// DMA API and at a PASID, every byte checked, every unmap followed by a DMA that must fault, and
// nothing left behind at the end.

import {
  type Device,
  DMA_BIDIRECTIONAL,
  DMA_FAULT,
  DMA_FROM_DEVICE,
  DMA_OK,
  DMA_PAGE_REQUESTED,
  DMA_READ,
  DMA_TO_DEVICE,
  DMA_WRITE,
  FaultKind,
  IOMMU_READ,
  IOMMU_WRITE,
  iommuAllocGlobalPasid,
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuDmaDisablePasid,
  iommuDmaEnablePasid,
  iommuDmaMapPhys,
  iommuDmaUnmapPhys,
  iommuDomainFree,
  iommuFreeGlobalPasid,
  iommuMap,
  iommuPagingDomainAlloc,
  iommuUnmap,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  type Prng,
  XLATE_OK,
} from "@iommu-sim/iommu-core";
import { MockMachine } from "@iommu-sim/iommu-core/testing";
import type { Scenario, ScenarioContext } from "../scenario.js";

const PAGE = 4096;

/** One DMA-API buffer: host memory, its DMA address and the bytes it should hold. */
interface Buffer {
  /** Frame allocation: its first frame and order. */
  frame: number;
  order: number;
  pa: number;
  size: number;
  dma: number;
  dir: number;
}

/** The devices of the default machine. */
const DEVICES = [
  { name: "nic0", rid: 0x0100 },
  { name: "nvme0", rid: 0x0200, pasidBits: 8, ats: true },
  { name: "accel0", rid: 0x0300, pasidBits: 16, ats: true, pri: true },
] as const;

function fill(prng: Prng, bytes: Uint8Array): void {
  for (let i = 0; i < bytes.length; i++) bytes[i] = prng.nextU32() & 0xff;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Compare what the hardware did for a DMA at `iova` with a fresh walk of the tables in memory:
 * a translation the tables no longer give is a stale cache hit.
 */
function agreesWithTables(
  m: MockMachine,
  dev: Device,
  iova: number,
  pasid: number,
  write: boolean,
): boolean {
  const req = newTranslationRequest();
  const res = newTranslationResult();
  req.rid = dev.rid;
  req.sid = dev.sid;
  req.pasid = pasid;
  req.iovaPfn = Math.floor(iova / PAGE);
  req.offset = iova % PAGE;
  req.access = write ? DMA_WRITE : DMA_READ;
  m.hw.translateUncached(req, res);
  return res.status === XLATE_OK;
}

export const defaultScenario: Scenario = {
  name: "default",
  arch: "mock",
  description:
    "three devices on the mock IOMMU: DMA-API buffers, DMA at a PASID, unmaps that must fault, no leaks",
  run(ctx: ScenarioContext): void {
    const m = new MockMachine({ seed: ctx.seed, iotlbEntries: 16 });
    if (ctx.traceListener !== null) m.trace.subscribe(ctx.traceListener);
    const prng = m.prng;
    const framesBaseline = m.frames.liveFrames;

    const devices: Device[] = [];
    for (const spec of DEVICES) {
      const dev = m.addDevice(spec);
      ctx.countOp();
      ctx.check("probe", typeof dev !== "string", `${spec.name}: probe failed: ${String(dev)}`);
      if (typeof dev !== "string") devices.push(dev);
    }
    if (devices.length !== DEVICES.length) return;

    // DMA-API buffers of random sizes and offsets for every device.
    const buffers = new Map<Device, Buffer[]>();
    for (const dev of devices) {
      const list: Buffer[] = [];
      const n = 4 + prng.below(5);
      for (let i = 0; i < n; i++) {
        const pages = 1 + prng.below(4);
        const order = pages > 2 ? 2 : pages > 1 ? 1 : 0;
        const frame = m.frames.alloc(order);
        ctx.countOp();
        if (typeof frame !== "number") {
          ctx.check("frame-alloc", false, `no frame for a buffer: ${frame}`);
          return;
        }
        const offset = prng.below(64) * 8;
        const size = Math.max(8, prng.below(pages * PAGE - offset));
        const dir = [DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL][prng.below(3)];
        const dma = iommuDmaMapPhys(dev, frame + offset, size, dir);
        ctx.countOp();
        ctx.check("dma-map", typeof dma === "number", `${dev.name}: map failed: ${String(dma)}`);
        if (typeof dma === "number")
          list.push({ frame, order, pa: frame + offset, size, dma, dir });
      }
      buffers.set(dev, list);
    }

    // Device reads see what the CPU wrote; device writes land where the CPU reads.
    for (const dev of devices) {
      for (const b of buffers.get(dev) ?? []) {
        const expect = new Uint8Array(b.size);
        fill(prng, expect);
        if (b.dir !== DMA_FROM_DEVICE) {
          m.mem.writeBytes(b.pa, expect);
          const got = new Uint8Array(b.size);
          const st = dev.read(b.dma, got);
          ctx.countDma();
          m.clock.advance(1);
          ctx.check(
            "dma-read",
            st === DMA_OK,
            `${dev.name}: read at 0x${b.dma.toString(16)}: ${st}`,
          );
          ctx.check("dma-read-bytes", equal(got, expect), `${dev.name}: read bytes differ`);
        }
        if (b.dir !== DMA_TO_DEVICE) {
          fill(prng, expect);
          const st = dev.write(b.dma, expect);
          ctx.countDma();
          m.clock.advance(1);
          ctx.check(
            "dma-write",
            st === DMA_OK,
            `${dev.name}: write at 0x${b.dma.toString(16)}: ${st}`,
          );
          const host = new Uint8Array(b.size);
          m.mem.readBytes(b.pa, host);
          ctx.check("dma-write-bytes", equal(host, expect), `${dev.name}: written bytes differ`);
        }
        // The direction is enforced: a device write to a to-device buffer faults.
        if (b.dir === DMA_TO_DEVICE) {
          const st = dev.write(b.dma, new Uint8Array(1));
          ctx.countDma();
          m.clock.advance(1);
          if (st === DMA_FAULT) ctx.countFault();
          ctx.check(
            "dma-direction",
            st === DMA_FAULT || st === DMA_PAGE_REQUESTED,
            `${dev.name}: write to a read-only mapping returned ${st}`,
          );
        }
      }
    }

    // Kernel DMA tagged with a PASID (ENQCMDS work): the default domain at a global PASID.
    const accel = devices[2];
    const pasid = iommuDmaEnablePasid(accel);
    ctx.countOp();
    ctx.check("dma-pasid", typeof pasid === "number" && pasid > 0, `enable: ${String(pasid)}`);
    if (typeof pasid === "number") {
      for (const b of buffers.get(accel) ?? []) {
        if (b.dir === DMA_FROM_DEVICE) continue;
        const got = new Uint8Array(b.size);
        const expect = new Uint8Array(b.size);
        m.mem.readBytes(b.pa, expect);
        const st = accel.read(b.dma, got, pasid);
        ctx.countDma();
        m.clock.advance(1);
        ctx.check("dma-pasid-read", st === DMA_OK && equal(got, expect), `pasid read: ${st}`);
      }
    }

    // A second domain, owned by "user space", at another global PASID of the same device.
    const user = iommuPagingDomainAlloc(accel);
    const userPasid = iommuAllocGlobalPasid(accel);
    ctx.countOp(2);
    if (typeof user !== "string") {
      const frame = m.frames.alloc(0) as number;
      const iova = 0x7f00_0000_0000 + prng.below(1024) * PAGE;
      const attach = iommuAttachDevicePasid(user, accel, userPasid);
      const map = iommuMap(user, iova, frame, PAGE, IOMMU_READ | IOMMU_WRITE);
      ctx.countOp(2);
      ctx.check("user-attach", attach === 0 && map === 0, `attach ${attach}, map ${map}`);
      const word = new Uint8Array(8);
      fill(prng, word);
      const st = accel.write(iova + 64, word, userPasid);
      ctx.countDma();
      m.clock.advance(1);
      const host = new Uint8Array(8);
      m.mem.readBytes(frame + 64, host);
      ctx.check("user-dma", st === DMA_OK && equal(host, word), `user write: ${st}`);
      // The RID does not see the user's mapping: isolation between the two address spaces.
      const rid = accel.write(iova + 64, word, NO_PASID);
      ctx.countDma();
      m.clock.advance(1);
      if (rid === DMA_FAULT) ctx.countFault();
      ctx.check("isolation", rid !== DMA_OK, "RID DMA reached the PASID's mapping");
      const unmapped = iommuUnmap(user, iova, PAGE);
      ctx.countOp();
      ctx.check("user-unmap", unmapped === PAGE, `unmap returned ${String(unmapped)}`);
      const after = accel.write(iova + 64, word, userPasid);
      ctx.countDma();
      m.clock.advance(1);
      if (after === DMA_FAULT) ctx.countFault();
      ctx.check("user-unmap-faults", after !== DMA_OK, "DMA after unmap went through");
      ctx.check(
        "no-stale-translation",
        !agreesWithTables(m, accel, iova + 64, userPasid, true),
        "the tables still translate an unmapped page",
      );
      iommuDetachDevicePasid(user, accel, userPasid);
      iommuFreeGlobalPasid(m.subsys, userPasid);
      iommuDomainFree(user);
      m.frames.free(frame, 0);
      ctx.countOp(4);
    } else {
      ctx.check("user-domain", false, `alloc failed: ${user}`);
    }

    // Unmap everything: each buffer's DMA must fault afterwards, with nothing stale in any cache.
    for (const dev of devices) {
      for (const b of buffers.get(dev) ?? []) {
        const ret = iommuDmaUnmapPhys(dev, b.dma, b.size, b.dir);
        ctx.countOp();
        ctx.check("dma-unmap", ret === 0, `${dev.name}: unmap: ${String(ret)}`);
        const st = dev.read(b.dma, new Uint8Array(1));
        ctx.countDma();
        m.clock.advance(1);
        if (st === DMA_FAULT) ctx.countFault();
        ctx.check(
          "unmapped-dma-faults",
          st === DMA_FAULT || st === DMA_PAGE_REQUESTED,
          `${dev.name}: DMA after unmap returned ${st} (kind ${dev.lastFaultKind})`,
        );
        if (st === DMA_FAULT) {
          ctx.check(
            "fault-kind",
            dev.lastFaultKind === FaultKind.TRANSLATION,
            `${dev.name}: fault kind ${dev.lastFaultKind}`,
          );
        }
      }
    }
    if (typeof pasid === "number") iommuDmaDisablePasid(accel);
    ctx.countOp();

    // Software drains the queues; every page request got its one response.
    m.processQueues();
    let requests = 0;
    let responses = 0;
    for (const dev of devices) {
      requests += dev.stats.pageRequests;
      responses += dev.stats.responses;
      ctx.check(
        "one-response-each",
        dev.stats.unexpectedResponses === 0 && dev.priOutstanding === 0,
        `${dev.name}: ${dev.stats.unexpectedResponses} unexpected, ${dev.priOutstanding} waiting`,
      );
    }
    ctx.check("page-requests-answered", requests === responses, `${requests} vs ${responses}`);
    ctx.check(
      "faults-reported",
      m.driver.faultLog.length > 0,
      "no fault reached the driver's fault queue",
    );

    // Teardown: frames, domain IDs, PASIDs and groups back to the baseline.
    for (const dev of devices) {
      m.removeDevice(dev);
      ctx.countOp();
    }
    for (const list of buffers.values()) for (const b of list) m.frames.free(b.frame, b.order);
    ctx.check(
      "no-frame-leak",
      m.frames.liveFrames === framesBaseline,
      `${m.frames.liveFrames - framesBaseline} frames leaked`,
    );
    ctx.check("no-did-leak", m.driver.didsInUse === 0, `${m.driver.didsInUse} domain IDs leaked`);
    ctx.check("no-pasid-leak", m.subsys.pasids.size() === 0, "PASIDs leaked");
    ctx.check("no-group-leak", m.subsys.groupIds.size === 0, "group numbers leaked");
  },
};
