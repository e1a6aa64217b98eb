// Helpers shared by the test files of iommu-core: unwrapping results, and the documented mock
// driver behind an IommuOps of the test's own making.

import type { Device } from "../src/device/device.js";
import type { IommuOps } from "../src/iommu/iommu-ops.js";
import type { MockIommuDriver } from "../src/mock/mock-iommu.js";

/** The value of a result that must not be an errno (the test fails with the errno otherwise). */
export function ok<T>(v: T | string): T {
  if (typeof v === "string") throw new Error(`unexpected ${v}`);
  return v;
}

/**
 * Test-local configuration of the documented mock: an IommuOps that delegates every member to
 * the machine's MockIommuDriver, with `over` replacing some (set one to undefined to drop it).
 */
export function mockOps(driver: MockIommuDriver, over: Partial<IommuOps> = {}): IommuOps {
  return {
    name: driver.name,
    pgsizeBitmap: driver.pgsizeBitmap,
    identityDomain: driver.identityDomain,
    blockedDomain: driver.blockedDomain,
    capable: (dev, cap) => driver.capable(dev, cap),
    probeDevice: (dev) => driver.probeDevice(dev),
    releaseDevice: (dev) => driver.releaseDevice(dev),
    domainAllocPaging: (dev) => driver.domainAllocPaging(dev),
    domainAllocPagingFlags: (dev, flags) => driver.domainAllocPagingFlags(dev, flags),
    pageResponse: (dev, evt, msg) => driver.pageResponse(dev, evt, msg),
    devEnableFeat: (dev, feat) => driver.devEnableFeat(dev, feat),
    devDisableFeat: (dev, feat) => driver.devDisableFeat(dev, feat),
    ...over,
  };
}

/** DMA-read `n` bytes at `iova` (and `pasid`): the status and the bytes as a plain array. */
export function dmaRead(
  dev: Device,
  iova: number,
  n: number,
  pasid?: number,
): { status: number; bytes: number[] } {
  const buf = new Uint8Array(n);
  const status = dev.read(iova, buf, pasid);
  return { status, bytes: [...buf] };
}
