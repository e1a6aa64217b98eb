// Tests of `iommu-sim decode smmu` and `iommu-sim translate smmu`: the documents and JSON lines
// they print for saved images, the register options, and every bad input as one line and exit 2.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { EVT_ID } from "@iommu-sim/arm-smmu/format";
import { type SmmuTestMachine, smmuTestMachine } from "@iommu-sim/arm-smmu/testing";
import {
  type PhysMemory,
  saveElfCore,
  saveSparseImage,
  toHex,
} from "@iommu-sim/iommu-core/platform";
import { afterAll, describe, expect, it } from "vitest";
import { EXIT, main } from "./cli.js";
import {
  decodeSmmu,
  formatSmmuDecode,
  type SmmuDecodeDocument,
  type SmmuDecodeOptions,
  smmuEventRef,
} from "./decode/smmu-decode.js";
import { DEFAULT_SMMU_IDR } from "./decode/smmu-translate.js";

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `iommu-sim ...args` in-process with `stdin` chunks for `-`. */
async function cliWith(stdin: Array<string | Uint8Array>, ...args: string[]): Promise<Result> {
  let stdout = "";
  let stderr = "";
  const code = await main(["node", "iommu-sim", ...args], {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    stdin,
  });
  return { code, stdout, stderr };
}

const cli = (...args: string[]) => cliWith([], ...args);

/** The run was refused as bad usage: exit 2, one line on stderr, nothing on stdout. */
function expectUsageError(r: Result, pattern: RegExp): void {
  expect(r.stderr).toMatch(/^iommu-sim: [^\n]+\n$/);
  expect(r.stderr).toMatch(pattern);
  expect(r.code).toBe(EXIT.USAGE);
  expect(r.stdout).toBe("");
}

const dir = mkdtempSync(path.join(tmpdir(), "iommu-sim-cli-smmu-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
function save(mem: PhysMemory, format: "elf" | "sparse" | "raw"): string {
  const file = path.join(dir, `m${n++}.${format}`);
  if (format === "raw") {
    const bytes = new Uint8Array(0x40_0000);
    mem.readBytes(0x4000_0000, bytes);
    writeFileSync(file, bytes);
  } else writeFileSync(file, format === "elf" ? saveElfCore(mem) : saveSparseImage(mem));
  return file;
}

/** sid 0x10: stage 1 with SubstreamIDs; 0x11 stage 2; 0x12 bypass; 0x300: an L2 table's STE. */
function machine() {
  const m = smmuTestMachine({ streamTable: "2lvl", log2size: 16 });
  const s1 = m.b.lpae(1, 12, 48);
  s1.map(0x1000, 0x8000_0000);
  s1.map(0x2000, 0x8000_1000);
  s1.map(0x3000, 0x8000_5000, 3, { ap: 3 });
  s1.map(0x20_0000, 0x4000_0000, 2);
  const cdt = m.b.cdTable(4);
  m.b.setCd(cdt, 0, m.b.s1CdFields(s1, 1));
  m.b.setCd(cdt, 5, m.b.s1CdFields(s1, 2));
  m.b.setSte(m.st, 0x10, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 4, S1DSS: 2 });
  const s2 = m.b.lpae(2, 12, 40);
  s2.map(0x1000, 0x9000_0000, 3, { s2ap: 1 });
  m.b.setSte(m.st, 0x11, { Config: 6, ...m.b.s2SteFields(s2, 7) });
  m.b.setSte(m.st, 0x12, { Config: 4 });
  m.b.setSte(m.st, 0x300, { Config: 0 });
  return { m, s1, s2, cdt };
}

/** The register options for `m`. */
function regs(m: SmmuTestMachine): string[] {
  const cfg = (m.st.fmt << 16) | (m.st.split << 6) | m.st.log2size;
  return ["--strtab-base", toHex(m.st.base), "--strtab-cfg", toHex(cfg)];
}

function options(m: SmmuTestMachine, extra: Partial<SmmuDecodeOptions> = {}): SmmuDecodeOptions {
  const cfg = (m.st.fmt << 16) | (m.st.split << 6) | m.st.log2size;
  return { strtabBase: m.st.base, strtabCfg: cfg, ...extra };
}

/** `decodeSmmu` of the original memory, as JSON would carry it. */
function expectedDoc(mem: PhysMemory, o: SmmuDecodeOptions): unknown {
  return JSON.parse(JSON.stringify(decodeSmmu(mem, o)));
}

describe("iommu-sim decode smmu", () => {
  it("--json prints one document: the image decodes as the memory it was saved from", async () => {
    const { m } = machine();
    for (const format of ["elf", "sparse"] as const) {
      const r = await cli("decode", "smmu", "--image", save(m.mem, format), ...regs(m), "--json");
      expect(r.stderr).toBe("");
      expect(r.code).toBe(EXIT.OK);
      expect(r.stdout.trimEnd().split("\n")).toHaveLength(1);
      const doc = JSON.parse(r.stdout);
      expect(doc).toEqual(expectedDoc(m.mem, options(m)));
      expect(Object.keys(doc).slice(0, 4)).toEqual([
        "arch",
        "streamTable",
        "devices",
        "pageTables",
      ]);
    }
  });

  it("--json has the issue's shape: devices by sid, translations by ssid, coalesced mappings", async () => {
    const { m, s1, s2 } = machine();
    const doc: SmmuDecodeDocument = JSON.parse(
      (await cli("decode", "smmu", "--image", save(m.mem, "elf"), ...regs(m), "--json")).stdout,
    );
    expect(doc).toMatchObject({
      arch: "smmu",
      streamTable: { format: "2-level", log2size: 16, split: 8 },
    });
    expect(doc.devices.map((d) => [d.sid, d.config])).toEqual([
      [0x10, "s1"],
      [0x11, "s2"],
      [0x12, "bypass"],
      [0x300, "abort"],
    ]);
    expect(doc.devices[0]?.translations).toMatchObject([
      { ssid: null, type: "s1", asid: 1, pageTable: toHex(s1.root) },
      { ssid: 5, type: "s1", asid: 2, pageTable: toHex(s1.root) },
    ]);
    expect(doc.devices[0]?.ste.fields).toMatchObject({ V: 1, Config: 5, S1CDMax: 4, S1DSS: 2 });
    expect(doc.devices[0]?.translations[1]?.cd?.fields).toMatchObject({
      ASID: 2,
      TTB0: toHex(s1.root),
    });
    expect(doc.pageTables[toHex(s1.root)]).toMatchObject({
      stage: 1,
      granule: 4096,
      startLevel: 0,
      ias: 48,
      mappings: [
        { iova: "0x1000", pa: "0x80000000", size: 0x2000, w: true, AP: 1, AttrIndx: 1, AF: 1 },
        { iova: "0x3000", pa: "0x80005000", size: 0x1000, w: false, AP: 3 },
        { iova: "0x200000", pa: "0x40000000", size: 0x20_0000 },
      ],
    });
    expect(doc.pageTables[toHex(s2.root)]).toMatchObject({
      stage: 2,
      mappings: [{ iova: "0x1000", pa: "0x90000000", size: 0x1000, r: true, w: false, S2AP: 1 }],
    });
  });

  it("prints the text tree by default; --device, --ssid and the limits filter and bound", async () => {
    const { m } = machine();
    const image = save(m.mem, "sparse");
    const r = await cli("decode", "smmu", "--image", image, ...regs(m));
    expect(r.code).toBe(EXIT.OK);
    expect(r.stdout).toBe(formatSmmuDecode(decodeSmmu(m.mem, options(m)) as SmmuDecodeDocument));
    expect(r.stdout).toMatch(/^SMMUv3 stream table 0x/);
    const json = async (...extra: string[]) =>
      JSON.parse(
        (await cli("decode", "smmu", "--image", image, ...regs(m), "--json", ...extra)).stdout,
      );
    expect((await json("--device", "0x11")).devices.map((d: { sid: number }) => d.sid)).toEqual([
      0x11,
    ]);
    expect((await json("--device", "00:02.2")).devices.map((d: { sid: number }) => d.sid)).toEqual([
      0x12,
    ]);
    const one = await json("--ssid", "5");
    expect(one.devices).toHaveLength(1);
    expect(one.devices[0].translations.map((t: { ssid: number }) => t.ssid)).toEqual([5]);
    const cut = await json("--max-mappings", "1");
    expect(cut.truncated).toBe(true);
    expect(cut).toEqual(expectedDoc(m.mem, options(m, { maxMappings: 1 })));
    const pages = await json("--max-table-pages", "0x2");
    expect(pages.truncated).toBe(true);
  });

  it("--raw --base reads a raw dump of the table region", async () => {
    const { m } = machine();
    const file = save(m.mem, "raw");
    const r = await cli(
      "decode",
      "smmu",
      "--image",
      file,
      "--raw",
      "--base",
      "0x40000000",
      ...regs(m),
      "--json",
    );
    expect(r.code).toBe(EXIT.OK);
    expect(JSON.parse(r.stdout).devices.map((d: { sid: number }) => d.sid)).toEqual([
      0x10, 0x11, 0x12, 0x300,
    ]);
  });

  it("--idr0..--idr5 describe the SMMU: what it lacks is reported as the event it causes", async () => {
    const { m } = machine();
    const image = save(m.mem, "elf");
    // No 4K granule.
    const idr5 = toHex(((DEFAULT_SMMU_IDR[5] as number) & ~0x10) >>> 0);
    const doc = JSON.parse(
      (await cli("decode", "smmu", "--image", image, ...regs(m), "--idr5", idr5, "--json")).stdout,
    );
    expect(doc.devices[0].translations[0]).toMatchObject({
      type: "blocked",
      event: smmuEventRef(EVT_ID.C_BAD_CD),
    });
    expect(doc.devices[1].translations[0]).toMatchObject({
      type: "blocked",
      event: smmuEventRef(EVT_ID.C_BAD_STE),
    });
    const t = await cli(
      "translate",
      "smmu",
      "--image",
      image,
      ...regs(m),
      "--idr5",
      idr5,
      "0x11@0x1000",
    );
    expect(JSON.parse(t.stdout)).toMatchObject({ result: "fault", event: { name: "C_BAD_STE" } });
  });

  it("a StreamID beyond the table, and reserved STRTAB_BASE_CFG values, are problems, not errors", async () => {
    const { m } = machine();
    const image = save(m.mem, "elf");
    const beyond = await cli(
      "decode",
      "smmu",
      "--image",
      image,
      ...regs(m),
      "--device",
      "0x10000",
      "--json",
    );
    expect(beyond.code).toBe(EXIT.OK);
    expect(JSON.parse(beyond.stdout).problems).toEqual([
      {
        address: toHex(m.st.base),
        structure: "stream table",
        message:
          "StreamID 0x10000 is beyond the stream table (2^16 StreamIDs): its transactions are aborted",
        event: smmuEventRef(EVT_ID.C_BAD_STREAMID),
      },
    ]);
    const fmt3 = await cli(
      "decode",
      "smmu",
      "--image",
      image,
      "--strtab-base",
      toHex(m.st.base),
      "--strtab-cfg",
      "0x30008",
    );
    expect(fmt3.code).toBe(EXIT.OK);
    expect(fmt3.stdout).toContain(
      "stream table: STRTAB_BASE_CFG.FMT 3 is reserved and behaves as 0: read as linear\n",
    );
  });
});

describe("iommu-sim translate smmu", () => {
  it("prints one JSON line per query, from operands and from stdin", async () => {
    const { m } = machine();
    const image = save(m.mem, "elf");
    const r = await cliWith(
      [
        "0x10:5@0x1abc\n# a comment\n\n",
        new TextEncoder().encode("17@0x1000\r\n00:02.2@0xfee00000"),
      ],
      "translate",
      "smmu",
      "--image",
      image,
      ...regs(m),
      "0x10@0x200000",
      "-",
      "0x300@0",
      "0x10000@0",
    );
    expect(r.stderr).toBe("");
    expect(r.code).toBe(EXIT.OK);
    const lines = r.stdout
      .trimEnd()
      .split("\n")
      .map((l) => JSON.parse(l));
    const ok = { result: "ok", r: true, bypass: false };
    expect(lines).toEqual([
      {
        query: "0x10@0x200000",
        sid: 16,
        ssid: null,
        iova: "0x200000",
        ...ok,
        pa: "0x40000000",
        pageSize: 0x20_0000,
        w: true,
      },
      {
        query: "0x10:5@0x1abc",
        sid: 16,
        ssid: 5,
        iova: "0x1abc",
        ...ok,
        pa: "0x80000abc",
        pageSize: 4096,
        w: true,
      },
      {
        query: "17@0x1000",
        sid: 17,
        ssid: null,
        iova: "0x1000",
        ...ok,
        pa: "0x90000000",
        pageSize: 4096,
        w: false,
      },
      {
        query: "00:02.2@0xfee00000",
        sid: 18,
        ssid: null,
        iova: "0xfee00000",
        ...ok,
        pa: "0xfee00000",
        pageSize: 4096,
        w: true,
        bypass: true,
      },
      { query: "0x300@0", sid: 0x300, ssid: null, iova: "0x0", result: "fault", event: null },
      {
        query: "0x10000@0",
        sid: 0x10000,
        ssid: null,
        iova: "0x0",
        result: "fault",
        event: smmuEventRef(EVT_ID.C_BAD_STREAMID),
      },
    ]);
  });

  it("--write, --exec and --priv change every query's access", async () => {
    const { m } = machine();
    const base = ["translate", "smmu", "--image", save(m.mem, "elf"), ...regs(m)];
    const names = (r: Result) =>
      r.stdout
        .trimEnd()
        .split("\n")
        .map((l) => JSON.parse(l).event?.name ?? "ok");
    expect(
      names(await cli(...base, "--write", "0x10@0x3000", "0x10@0x1000", "0x11@0x1000")),
    ).toEqual(["F_PERMISSION", "ok", "F_PERMISSION"]);
    expect(names(await cli(...base, "--exec", "0x10:5@0x1000"))).toEqual(["ok"]);
    expect(names(await cli(...base, "--priv", "0x10:5@0x1000"))).toEqual(["ok"]);
  });
});

describe("decode smmu and translate smmu refuse bad input with one line", () => {
  it("every bad input is one line on stderr and exit 2", async () => {
    const { m } = machine();
    const image = save(m.mem, "elf");
    const junk = path.join(dir, "junk");
    writeFileSync(junk, "junk");
    const dec = (...args: string[]) => cli("decode", "smmu", ...args);
    const tr = (...args: string[]) =>
      cli("translate", "smmu", "--image", image, ...regs(m), ...args);
    const [, base, , cfg] = regs(m) as [string, string, string, string];
    expectUsageError(
      await dec("--image", image, "--strtab-cfg", cfg),
      /^iommu-sim: --strtab-base: missing: give the STRTAB_BASE register value \(--strtab-base VALUE\)\n$/,
    );
    expectUsageError(
      await dec("--image", image, "--strtab-base", base),
      /^iommu-sim: --strtab-cfg: missing: give the STRTAB_BASE_CFG register value \(--strtab-cfg VALUE\)\n$/,
    );
    expectUsageError(
      await dec("--image", image, "--strtab-base", "0xg", "--strtab-cfg", cfg),
      /^iommu-sim: --strtab-base: expected an unsigned 64-bit value, decimal or 0x hex, got "0xg"\n$/,
    );
    expectUsageError(
      await dec("--image", image, "--strtab-base", "0x10000000000000000", "--strtab-cfg", cfg),
      /^iommu-sim: --strtab-base: expected an unsigned 64-bit value/,
    );
    expectUsageError(
      await dec("--image", image, "--strtab-base", base, "--strtab-cfg", "0x100000000"),
      /^iommu-sim: --strtab-cfg: expected an unsigned 32-bit value, decimal or 0x hex, got "0x100000000"\n$/,
    );
    expectUsageError(
      await dec("--image", image, ...regs(m), "--idr1", "-1"),
      /^iommu-sim: --idr1: expected an unsigned 32-bit value, decimal or 0x hex, got "-1"\n$/,
    );
    const ttf1 = toHex(((DEFAULT_SMMU_IDR[0] as number) & ~0xc) | 0x4);
    expectUsageError(
      await dec("--image", image, ...regs(m), "--idr0", ttf1),
      /^iommu-sim: --idr0: IDR0\.TTF 1 \(VMSAv8-32 LPAE tables only\): the model walks VMSAv8-64 tables only\n$/,
    );
    expectUsageError(
      await tr("--idr5", toHex((DEFAULT_SMMU_IDR[5] as number) | 7), "0@0"),
      /^iommu-sim: --idr5: IDR5\.OAS 7 \(56 bits\) is beyond the model's 52-bit physical addresses\n$/,
    );
    expectUsageError(
      await dec("--image", image, ...regs(m), "--idr5", "0"),
      /^iommu-sim: --idr5: IDR5\.GRAN4K\/GRAN16K\/GRAN64K: no granule is implemented\n$/,
    );
    expectUsageError(
      await dec("--image", image, ...regs(m), "--rtaddr", "0"),
      /^iommu-sim: --rtaddr: applies to vtd only \(smmu takes --strtab-base and --strtab-cfg\)\n$/,
    );
    expectUsageError(
      await tr("--cap", "0", "0@0"),
      /^iommu-sim: --cap: applies to vtd only \(smmu takes --idr0\.\.--idr5\)\n$/,
    );
    expectUsageError(
      await tr("--ecap", "0", "0@0"),
      /^iommu-sim: --ecap: applies to vtd only \(smmu takes --idr0\.\.--idr5\)\n$/,
    );
    expectUsageError(
      await dec("--image", image, ...regs(m), "--pasid", "1"),
      /^iommu-sim: --pasid: applies to vtd only \(smmu takes --ssid\)\n$/,
    );
    expectUsageError(
      await cli("decode", "vtd", "--image", image, "--rtaddr", "0", "--strtab-base", "0"),
      /^iommu-sim: --strtab-base: applies to smmu only \(vtd takes --rtaddr\)\n$/,
    );
    expectUsageError(
      await cli("decode", "vtd", "--image", image, "--rtaddr", "0", "--strtab-cfg", "0"),
      /^iommu-sim: --strtab-cfg: applies to smmu only \(vtd takes --rtaddr\)\n$/,
    );
    expectUsageError(
      await cli("translate", "vtd", "--image", image, "--rtaddr", "0", "--idr3", "0", "0@0"),
      /^iommu-sim: --idr3: applies to smmu only \(vtd takes --cap and --ecap\)\n$/,
    );
    expectUsageError(
      await cli("decode", "vtd", "--image", image, "--rtaddr", "0", "--ssid", "1"),
      /^iommu-sim: --ssid: applies to smmu only \(vtd takes --pasid\)\n$/,
    );
    expectUsageError(
      await dec("--image", image, ...regs(m), "--device", "0x100000000"),
      /^iommu-sim: --device: expected a StreamID: a number up to 0xffffffff, or BB:DD\.F, got "0x100000000"\n$/,
    );
    expectUsageError(
      await dec("--image", image, ...regs(m), "--device", "00:20.0"),
      /^iommu-sim: --device: device 0x20 in 00:20\.0 is above 0x1f\n$/,
    );
    expectUsageError(
      await dec("--image", image, ...regs(m), "--ssid", "0x100000"),
      /^iommu-sim: --ssid: expected a SubstreamID: a number up to 0xfffff, got "0x100000"\n$/,
    );
    expectUsageError(
      await dec("--image", image, ...regs(m), "--max-mappings", "x"),
      /^iommu-sim: --max-mappings: expected a count up to 4294967295/,
    );
    expectUsageError(await dec(...regs(m)), /^iommu-sim: --image: missing/);
    expectUsageError(
      await dec("--image", path.join(dir, "nope"), ...regs(m)),
      /^iommu-sim: --image: cannot read .*nope: no such file or directory\n$/,
    );
    expectUsageError(
      await dec("--image", junk, ...regs(m)),
      /^iommu-sim: --image: .*junk: neither an ELF core nor an iommu-sim sparse image; for a raw RAM dump pass --raw --base ADDR\n$/,
    );
    expectUsageError(
      await dec("--image", image, ...regs(m), "--raw"),
      /^iommu-sim: --raw: needs --base ADDR\n$/,
    );
    expectUsageError(
      await tr("0x10@0x1000", "0x10@zz"),
      /^iommu-sim: query "0x10@zz": expected an IOVA/,
    );
    expectUsageError(await tr("0x10"), /^iommu-sim: query "0x10": expected SID\[:SSID\]@IOVA\n$/);
    expectUsageError(
      await tr("0x100000000@0"),
      /^iommu-sim: query "0x100000000@0": expected a StreamID/,
    );
    expectUsageError(
      await tr("1:0x100000@0"),
      /^iommu-sim: query "1:0x100000@0": expected a SubstreamID/,
    );
    expectUsageError(
      await cliWith(["0x10@0\n\nbad@0\n"], "translate", "smmu", "--image", image, ...regs(m), "-"),
      /^iommu-sim: stdin line 3: expected a StreamID/,
    );
    expectUsageError(
      await cliWith([], "translate", "smmu", "--image", image, ...regs(m), "-", "-"),
      /^iommu-sim: translate: - \(stdin\) given twice\n$/,
    );
    expectUsageError(
      await tr(),
      /^iommu-sim: translate: no queries: give SID\[:SSID\]@IOVA operands, or - to read them from stdin\n$/,
    );
    expectUsageError(
      await tr("--write", "--exec", "0@0"),
      /^iommu-sim: --exec: an execute request is a read; it cannot be combined with --write\n$/,
    );
    expectUsageError(
      await cli("decode", "arm"),
      /^iommu-sim: decode: unknown arch "arm" \(known: vtd, smmu\)\n$/,
    );
  });

  it("--help lists the SMMU options of decode and translate", async () => {
    const dec = await cli("decode", "--help");
    for (const opt of [
      "--strtab-base <value>",
      "--strtab-cfg <value>",
      "--idr0 <value>",
      "--idr5 <value>",
      "--ssid <n>",
      "--device <bdf>",
    ])
      expect(dec.stdout).toContain(opt);
    expect(dec.stdout).toMatch(/arch: vtd or smmu/);
    const tr = await cli("translate", "--help");
    for (const opt of ["--strtab-base <value>", "--idr3 <value>", "--write", "--priv"])
      expect(tr.stdout).toContain(opt);
    expect(tr.stdout).toContain("SID[:SSID]@IOVA (smmu)");
  });
});
