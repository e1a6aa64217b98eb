// Tests of scripts/kernel-map.ts: which `@kernel` tags it finds, what it refuses, what it writes.

import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  collectKernelTags,
  type KernelTag,
  listSources,
  renderKernelMap,
} from "../../../scripts/kernel-map.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** The tags of one file as `kernelFile symbol -> name` strings, in source order. */
function tagsOf(text: string, file = "packages/x/src/x.ts"): string[] {
  const { tags, problems } = collectKernelTags([{ path: file, text }]);
  expect(problems).toEqual([]);
  return tags.map((t) => `${t.kernelFile} ${t.symbol} -> ${t.name}`);
}

/** The problems of one file as `line: message` strings. */
function problemsOf(text: string): string[] {
  const { problems } = collectKernelTags([{ path: "packages/x/src/x.ts", text }]);
  for (const p of problems) expect(p.path).toBe("packages/x/src/x.ts");
  return problems.map((p) => `${p.line}: ${p.message}`);
}

describe("collectKernelTags", () => {
  it("ties a tag to the top-level declaration that follows its doc comment", () => {
    const text = [
      "// File comment.",
      "",
      "/** @kernel drivers/iommu/iommu.c iommu_attach_device */",
      "export function iommuAttachDevice(): void {}",
      "/** @kernel include/linux/iommu.h IOMMU_READ */",
      "export const IOMMU_READ = 1;",
      "/** @kernel include/linux/iommu.h iommu_ops */",
      "export interface IommuOps {}",
      "/** @kernel include/linux/iommu.h iommu_cap */",
      "export type IommuCap = number;",
      "/** @kernel include/linux/iommu.h iommu_resv_type */",
      "export enum ResvType { Direct }",
      "/** @kernel drivers/iommu/iommu.c iommu_group */",
      "class IommuGroup {}",
    ].join("\n");
    expect(tagsOf(text)).toEqual([
      "drivers/iommu/iommu.c iommu_attach_device -> iommuAttachDevice",
      "include/linux/iommu.h IOMMU_READ -> IOMMU_READ",
      "include/linux/iommu.h iommu_ops -> IommuOps",
      "include/linux/iommu.h iommu_cap -> IommuCap",
      "include/linux/iommu.h iommu_resv_type -> ResvType",
      "drivers/iommu/iommu.c iommu_group -> IommuGroup",
    ]);
  });

  it("qualifies members by their class, interface, enum, type literal or object literal", () => {
    const text = `
export class Ida {
  /**
   * Allocate.
   *
   * @kernel lib/idr.c ida_alloc_range
   */
  alloc(): number { return 0; }
  /** @kernel lib/idr.c ida_free */
  static free(): void {}
  /** @kernel lib/idr.c ida_init */
  constructor() {}
  /** @kernel lib/idr.c ida_is_empty */
  get empty(): boolean { return true; }
  /** @kernel lib/idr.c ida_destroy */
  #destroy(): void {}
}
export interface IommuDomainOps {
  /** @kernel include/linux/iommu.h iommu_domain_ops.attach_dev */
  attachDev(): void;
  /** @kernel include/linux/iommu.h iommu_domain_ops.free */
  readonly free?: () => void;
}
export enum Kind {
  /** @kernel include/linux/iommu.h IOMMU_DOMAIN_BLOCKED */
  Blocked = 0,
}
export type Gather = {
  /** @kernel include/linux/iommu.h iommu_iotlb_gather.start */
  start: number;
};
export const mockOps = Object.freeze({
  /** @kernel drivers/iommu/iommufd/selftest.c mock_domain_map_pages */
  mapPages() {},
  nested: {
    /** @kernel drivers/iommu/iommufd/selftest.c mock_domain_nop */
    nop: () => {},
  },
} as const);
`;
    expect(tagsOf(text)).toEqual([
      "lib/idr.c ida_alloc_range -> Ida.alloc",
      "lib/idr.c ida_free -> Ida.free",
      "lib/idr.c ida_init -> Ida.constructor",
      "lib/idr.c ida_is_empty -> Ida.empty",
      "lib/idr.c ida_destroy -> Ida.#destroy",
      "include/linux/iommu.h iommu_domain_ops.attach_dev -> IommuDomainOps.attachDev",
      "include/linux/iommu.h iommu_domain_ops.free -> IommuDomainOps.free",
      "include/linux/iommu.h IOMMU_DOMAIN_BLOCKED -> Kind.Blocked",
      "include/linux/iommu.h iommu_iotlb_gather.start -> Gather.start",
      "drivers/iommu/iommufd/selftest.c mock_domain_map_pages -> mockOps.mapPages",
      "drivers/iommu/iommufd/selftest.c mock_domain_nop -> mockOps.nested.nop",
    ]);
  });

  it("reads several tags in one comment, a tag after text, and a struct keyword", () => {
    const text = `
/**
 * Allocate an IOASID.
 * @returns the ID.
 * @kernel drivers/iommu/ioasid.c ioasid_alloc
 * @kernel kernel/cgroup/misc.c misc_cg_try_charge
 */
export function alloc(): void {}
/** Mapping protections. @kernel include/linux/iommu.h IOMMU_WRITE */
export const IOMMU_WRITE = 2;
/** @kernel include/linux/misc_cgroup.h struct misc_cg */
export interface ChargeNode {}
/** @kernel lib/idr.c ida_alloc_min @see Ida */
export function allocMin(): void {}
`;
    expect(tagsOf(text)).toEqual([
      "drivers/iommu/ioasid.c ioasid_alloc -> alloc",
      "kernel/cgroup/misc.c misc_cg_try_charge -> alloc",
      "include/linux/iommu.h IOMMU_WRITE -> IOMMU_WRITE",
      "include/linux/misc_cgroup.h struct misc_cg -> ChargeNode",
      "lib/idr.c ida_alloc_min -> allocMin",
    ]);
  });

  it("a tag with only the kernel file names the whole file", () => {
    const { tags } = collectKernelTags([
      { path: "packages/x/src/x.ts", text: "/** @kernel drivers/iommu/ioasid.c */\nclass S {}\n" },
    ]);
    expect(tags).toEqual([
      {
        kernelFile: "drivers/iommu/ioasid.c",
        symbol: "",
        name: "S",
        path: "packages/x/src/x.ts",
        line: 1,
      },
    ]);
  });

  it("a tag in a // comment right above a declaration counts too", () => {
    const text =
      "// Type bits. @kernel include/linux/iommu.h __IOMMU_DOMAIN_PAGING\nconst P = 1;\n";
    expect(tagsOf(text)).toEqual(["include/linux/iommu.h __IOMMU_DOMAIN_PAGING -> P"]);
  });

  it("every name of a multi-declaration statement gets the tag", () => {
    expect(
      tagsOf("/** @kernel include/linux/iommu.h IOMMU_READ */\nconst R = 1, W = 2;\n"),
    ).toEqual(["include/linux/iommu.h IOMMU_READ -> R", "include/linux/iommu.h IOMMU_READ -> W"]);
  });

  it("ignores @kernel inside a word, after a backtick, or as an address", () => {
    const text = "/** Tags look like `@kernel x`; mail root@kernel.org. */\nexport const A = 1;\n";
    expect(tagsOf(text)).toEqual([]);
  });

  it("refuses malformed tags with their line", () => {
    const text = [
      "/** @kernel */", // 1
      "export const A = 1;",
      "/**",
      " * Free an ID.",
      " * @kernel ida_free", // 5
      " */",
      "export const B = 1;",
      "/** @kernel lib/idr.c ida_free and more words */", // 8
      "export const C = 1;",
      "/** @kernel include/linux/misc_cgroup.h struct */", // 10
      "export const D = 1;",
    ].join("\n");
    expect(problemsOf(text)).toEqual([
      "1: malformed @kernel tag: expected `@kernel <kernel-file> <symbol>`, got nothing",
      '5: malformed @kernel tag: expected `@kernel <kernel-file> <symbol>`; "ida_free" is not a kernel source path',
      '8: malformed @kernel tag: expected `@kernel <kernel-file> <symbol>`; unexpected "and more words" after the symbol',
      '10: malformed @kernel tag: expected `@kernel <kernel-file> <symbol>`; "struct" needs a name',
    ]);
  });

  it("refuses a tag that is not on a declaration", () => {
    const text = [
      "/** @kernel lib/idr.c ida_free */", // 1: above an import
      'import { x } from "./x.js";',
      "export function f(): void {",
      "  /** @kernel lib/idr.c ida_alloc */", // 4: inside a body
      "  x();",
      "}",
      "/** @kernel lib/idr.c ida_destroy */", // 7: at the end of the file
    ].join("\n");
    expect(problemsOf(text)).toEqual([
      "1: @kernel tag is not in a comment on a declaration",
      "4: @kernel tag is not in a comment on a declaration",
      "7: @kernel tag is not in a comment on a declaration",
    ]);
  });
});

describe("renderKernelMap", () => {
  const tag = (kernelFile: string, symbol: string, name: string, file: string): KernelTag => ({
    kernelFile,
    symbol,
    name,
    path: file,
    line: 1,
  });
  const tags = [
    tag("lib/xarray.c", "xa_load", "IdMap.load", "packages/ioasid/src/id-map.ts"),
    tag("lib/idr.c", "ida_free", "Ida.free", "packages/ioasid/src/ida.ts"),
    tag("lib/xarray.c", "__xa_alloc_cyclic", "IdMap.allocCyclic", "packages/ioasid/src/id-map.ts"),
    tag("lib/xarray.c", "xa_alloc", "IdMap.alloc", "packages/ioasid/src/id-map.ts"),
    tag("lib/idr.c", "", "Ida", "packages/ioasid/src/ida.ts"),
    tag("lib/idr.c", "ida_free", "Ida.free", "packages/ioasid/src/ida.ts"),
  ];

  it("writes a header, one table per kernel file, sorted rows, each row once", () => {
    expect(renderKernelMap(tags)).toBe(
      [
        "# Kernel map",
        "",
        "Where each kernel symbol has its counterpart in iommu-sim: the `@kernel <file> <symbol>` tags",
        "of the doc comments in `packages/*/src` and `apps/*/src`, by kernel file. A tag without a",
        "symbol marks a counterpart of the whole file.",
        "",
        "Generated by `scripts/kernel-map.ts`: do not edit. Regenerate with",
        "`npx -y pnpm@10.34.9 kernel-map`; CI runs `kernel-map --check`, which fails when this file is",
        "stale.",
        "",
        "5 entries for 2 kernel files.",
        "",
        "## `lib/idr.c`",
        "",
        "| kernel symbol | iommu-sim | file |",
        "| --- | --- | --- |",
        "| *(whole file)* | `Ida` | [packages/ioasid/src/ida.ts](../packages/ioasid/src/ida.ts) |",
        "| `ida_free` | `Ida.free` | [packages/ioasid/src/ida.ts](../packages/ioasid/src/ida.ts) |",
        "",
        "## `lib/xarray.c`",
        "",
        "| kernel symbol | iommu-sim | file |",
        "| --- | --- | --- |",
        "| `xa_alloc` | `IdMap.alloc` | [packages/ioasid/src/id-map.ts](../packages/ioasid/src/id-map.ts) |",
        "| `__xa_alloc_cyclic` | `IdMap.allocCyclic` | [packages/ioasid/src/id-map.ts](../packages/ioasid/src/id-map.ts) |",
        "| `xa_load` | `IdMap.load` | [packages/ioasid/src/id-map.ts](../packages/ioasid/src/id-map.ts) |",
        "",
      ].join("\n"),
    );
  });

  it("does not depend on the order of the tags or their lines", () => {
    const moved = [...tags].reverse().map((t, i) => ({ ...t, line: 100 + i }));
    expect(renderKernelMap(moved)).toBe(renderKernelMap(tags));
  });

  it("escapes table pipes", () => {
    const out = renderKernelMap([tag("lib/a.c", "a|b", "A", "packages/x/src/a.ts")]);
    expect(out).toContain("| `a\\|b` | `A` |");
  });
});

describe("listSources", () => {
  it("lists the sources of packages and apps, without tests, sorted", () => {
    const files = listSources(repoRoot);
    expect(files).toContain("apps/harness/src/cli.ts");
    expect(files).toContain("packages/ioasid/src/ida.ts");
    expect(files.some((f) => f.endsWith(".test.ts"))).toBe(false);
    expect(files.every((f) => /^(packages|apps)\/[^/]+\/src\//.test(f))).toBe(true);
    expect([...files].sort()).toEqual(files);
  });
});
