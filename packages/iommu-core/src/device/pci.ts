// PCI requester IDs (bus, device, function) and the few PCI capability constants devices need.

/** Smallest ATS translation unit shift the kernel accepts. @kernel include/linux/pci-ats.h PCI_ATS_MIN_STU */
export const PCI_ATS_MIN_STU = 12;

/** PASID capability feature: Execute Permission. @kernel include/uapi/linux/pci_regs.h PCI_PASID_CAP_EXEC */
export const PCI_PASID_CAP_EXEC = 0x02;
/** PASID capability feature: Privileged Mode. @kernel include/uapi/linux/pci_regs.h PCI_PASID_CAP_PRIV */
export const PCI_PASID_CAP_PRIV = 0x04;

/** Width of the PASID field of a PASID TLP prefix. @spec PCIe Base Specification 6.20 */
export const PCI_PASID_MAX_BITS = 20;

/**
 * The requester ID `bus << 8 | device << 3 | function`, or -1 (never a valid requester ID, so
 * `Device.create` and `DmaBus.addDevice` reject it) when a part is outside its field: bus 0..255,
 * device 0..31, function 0..7. The kernel's macros truncate instead; a silent alias of another
 * device is worse here than a rejected one.
 *
 * @kernel include/linux/pci.h PCI_DEVID
 */
export function pciRid(bus: number, dev: number, fn: number): number {
  if (!inField(bus, 0xff) || !inField(dev, 0x1f) || !inField(fn, 7)) return -1;
  return (bus << 8) | (dev << 3) | fn;
}

function inField(v: number, max: number): boolean {
  return Number.isInteger(v) && v >= 0 && v <= max;
}

/** Whether `rid` is a 16-bit requester ID. */
export function isPciRid(rid: number): boolean {
  return inField(rid, 0xffff);
}

/** Bus number of a requester ID. @kernel include/linux/pci.h PCI_BUS_NUM */
export function ridBus(rid: number): number {
  return (rid >>> 8) & 0xff;
}

/** Device/function byte of a requester ID. @kernel include/linux/pci.h PCI_DEVFN */
export function ridDevfn(rid: number): number {
  return rid & 0xff;
}

/** Device (slot) number of a requester ID. @kernel include/uapi/linux/pci.h PCI_SLOT */
export function ridSlot(rid: number): number {
  return (rid >>> 3) & 0x1f;
}

/** Function number of a requester ID. @kernel include/uapi/linux/pci.h PCI_FUNC */
export function ridFunc(rid: number): number {
  return rid & 7;
}

function hex(v: number, digits: number): string {
  return v.toString(16).padStart(digits, "0");
}

/**
 * `bus:device.function` in hex as lspci prints it ("00:02.0"); "??:??.?" for a value that is not a
 * 16-bit requester ID.
 */
export function formatRid(rid: number): string {
  if (!isPciRid(rid)) return "??:??.?";
  return `${hex(ridBus(rid), 2)}:${hex(ridSlot(rid), 2)}.${ridFunc(rid)}`;
}

const RID_TEXT = /^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$/;

/**
 * The requester ID written as lspci writes it: "bb:dd.f", or "dddd:bb:dd.f" with domain 0000 (the
 * model has one PCI segment). Hex digits in either case. Null for anything else, including a
 * device number above 0x1f or another domain.
 */
export function parseRid(text: string): number | null {
  const m = RID_TEXT.exec(text);
  if (m === null) return null;
  if (m[1] !== undefined && Number.parseInt(m[1], 16) !== 0) return null;
  const rid = pciRid(Number.parseInt(m[2], 16), Number.parseInt(m[3], 16), Number(m[4]));
  return rid < 0 ? null : rid;
}
