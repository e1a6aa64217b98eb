// The example of the package README, run as written: its comments state the results.

import { expect, it } from "vitest";
import { ChargeTree, Ida, IoasidSet, IoasidSpace, isErrno } from "../src/index.js";

it("the README example returns what its comments say", () => {
  const domainIds = new Ida();
  const did = domainIds.alloc({ min: 1, max: 0xffff });
  expect(did).toBe(1);
  expect(domainIds.free(did as number)).toBe(0);
  expect(domainIds.free(did as number)).toBe("ENOENT");

  const charges = new ChargeTree({ capacity: 1 << 20 });
  const alice = charges.createNode(charges.root, "uid-1000", 2);
  const pasids = new IoasidSpace<{ owner: string }>({ charges });
  const dmaSet = new IoasidSet("dma-api");
  const svaSet = new IoasidSet("sva");

  const kernelPasid = pasids.alloc(dmaSet, 1, (1 << 20) - 1, { owner: "idxd" });
  expect(kernelPasid).toBe(1);
  if (isErrno(alice)) throw new Error(alice);
  expect(pasids.alloc(svaSet, 1, (1 << 20) - 1, { owner: "proc-1" }, alice)).toBe(2);
  expect(pasids.alloc(svaSet, 1, (1 << 20) - 1, { owner: "proc-2" }, alice)).toBe(3);
  expect(pasids.alloc(svaSet, 1, (1 << 20) - 1, { owner: "proc-3" }, alice)).toBe("EBUSY");
  expect(alice.events.max).toBe(1);
  expect(pasids.find(svaSet, kernelPasid as number)).toBe("EACCES");
  expect(pasids.find(dmaSet, kernelPasid as number)).toEqual({ owner: "idxd" });
});
