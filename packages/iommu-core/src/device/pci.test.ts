import { describe, expect, it } from "vitest";
import {
  formatRid,
  isPciRid,
  parseRid,
  pciRid,
  ridBus,
  ridDevfn,
  ridFunc,
  ridSlot,
} from "./pci.js";

describe("pciRid", () => {
  it("packs bus, device and function as bus << 8 | dev << 3 | fn", () => {
    expect(pciRid(0, 2, 0)).toBe(0x0010);
    expect(pciRid(0x3a, 0x1f, 7)).toBe(0x3aff);
    expect(pciRid(0xff, 0x1f, 7)).toBe(0xffff);
  });

  it("returns -1 (never a valid RID) for a part outside its field", () => {
    expect(pciRid(256, 0, 0)).toBe(-1);
    expect(pciRid(0, 32, 0)).toBe(-1);
    expect(pciRid(0, 0, 8)).toBe(-1);
    expect(pciRid(-1, 0, 0)).toBe(-1);
    expect(pciRid(0, 1.5, 0)).toBe(-1);
    expect(isPciRid(-1)).toBe(false);
  });

  it("splits back into bus, devfn, slot and function", () => {
    const rid = pciRid(0x12, 0x0a, 3);
    expect([ridBus(rid), ridDevfn(rid), ridSlot(rid), ridFunc(rid)]).toEqual([0x12, 0x53, 0x0a, 3]);
  });
});

describe("formatRid / parseRid", () => {
  it("prints bus:dev.fn in hex as lspci does", () => {
    expect(formatRid(pciRid(0, 2, 0))).toBe("00:02.0");
    expect(formatRid(pciRid(0xab, 0x1c, 5))).toBe("ab:1c.5");
    expect(formatRid(0x10000)).toBe("??:??.?");
  });

  it("parses bb:dd.f and dddd:bb:dd.f with domain 0000, in either case", () => {
    expect(parseRid("00:02.0")).toBe(0x10);
    expect(parseRid("0000:3a:1F.7")).toBe(0x3aff);
    expect(parseRid("AB:1C.5")).toBe(pciRid(0xab, 0x1c, 5));
  });

  it("rejects another domain, a device above 0x1f, a function above 7 and loose forms", () => {
    for (const bad of [
      "0001:00:02.0",
      "00:20.0",
      "00:02.8",
      "0:2.0",
      "00:02",
      " 00:02.0",
      "00:02.0 ",
      "000:00:02.0",
      "",
      "zz:02.0",
    ]) {
      expect(parseRid(bad), bad).toBeNull();
    }
  });

  it("round-trips every requester ID", () => {
    for (let rid = 0; rid <= 0xffff; rid++) {
      if (parseRid(formatRid(rid)) !== rid) expect.fail(`rid ${rid}`);
      if (parseRid(`0000:${formatRid(rid)}`) !== rid) expect.fail(`rid ${rid} with domain`);
    }
  });
});
