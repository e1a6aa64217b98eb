// The validated form of a scenario file (format version 1): what `parseScenarioFile` returns and
// what the scenario interpreter runs. Every default is resolved; every node knows its place.

/** A place in the scenario file: 1-based line and column (columns count UTF-16 code units). */
export interface Loc {
  readonly line: number;
  readonly column: number;
}

/** The stable codes of scenario file errors (see docs/scenario-files.md). */
export const SCENARIO_ERROR_CODES = Object.freeze([
  "yaml-syntax",
  "unsupported",
  "bad-type",
  "bad-value",
  "out-of-range",
  "missing-field",
  "unknown-field",
  "duplicate-field",
  "unknown-name",
  "duplicate-name",
  "unavailable",
] as const);

/** One of {@link SCENARIO_ERROR_CODES}. */
export type ScenarioErrorCode = (typeof SCENARIO_ERROR_CODES)[number];

/**
 * Architectures a scenario file may name: one IOMMU (`vtd`, `smmu`), the mock, or `both`: the
 * same machine and steps on VT-d and on SMMUv3, every DMA's outcome compared.
 */
export type ScenarioArch = "vtd" | "mock" | "smmu" | "both";

/** How DMA-API domains invalidate after an unmap: at once, or through the flush queue. */
export type InvalidationMode = "strict" | "lazy";

/** A superpage size a VT-d unit supports (CAP.SLLPS; CAP.FS1GP for first-stage 1 GiB pages). */
export type SuperpageSize = "2M" | "1G";

/** A validated scenario file. */
export interface ScenarioSpec {
  /** The file name the spec was parsed from, for messages (`file:line:column`). */
  readonly file: string;
  /** The format version: only 1 so far. */
  readonly version: 1;
  /** The scenario's name, `/^[a-z0-9][a-z0-9-]*$/`. */
  readonly scenario: string;
  /** One line for listings; `""` when the file has none. */
  readonly description: string;
  readonly arch: ScenarioArch;
  /** The file's seed (an unsigned 32-bit integer), or undefined: the CLI's `--seed` wins anyway. */
  readonly seed?: number;
  /** How DMA-API domains invalidate (default `strict`). */
  readonly invalidation: InvalidationMode;
  readonly machine: MachineSpec;
  /** The users processes are charged to, in file order (none when the file has no `users`). */
  readonly users: readonly UserSpec[];
  /** At least one step, in file order. */
  readonly steps: readonly StepSpec[];
  readonly loc: Loc;
}

/** The simulated machine: memory, IOMMU units and devices. */
export interface MachineSpec {
  /** Bytes in the frame pool: a multiple of 4 KiB in 16 MiB..4 GiB (default 256 MiB). */
  readonly memory: number;
  /** The VT-d units (DMAR units) in file order: 1 to 8 for `vtd`, none for `mock`. */
  readonly units: readonly UnitSpec[];
  /** 1 to 64 devices in file order. */
  readonly devices: readonly DeviceSpec[];
  readonly loc: Loc;
}

/** One VT-d remapping unit and the capabilities it reports. */
export interface UnitSpec {
  /** Unique among units, `/^[a-z][a-z0-9_-]*$/`. */
  readonly name: string;
  /** Scalable mode (RTADDR_REG.TTM = 01) or legacy mode root and context tables. */
  readonly mode: "scalable" | "legacy";
  /** The hardware model's caching policy: cache all the spec allows, or as little as it allows. */
  readonly cache: "maximal" | "minimal";
  /** IOTLB entries (a power of two, 1..4096), or undefined for the hardware model's default. */
  readonly iotlb?: number;
  /** CAP.CM: not-present and erroneous entries may be cached, so the driver flushes on map too. */
  readonly cachingMode: boolean;
  /** PASID width, 0..20 (0: no PASID support); default 20 in scalable mode, 0 in legacy mode. */
  readonly pasidBits: number;
  /** ECAP.DT: device-TLB (ATS) support (default true). */
  readonly ats: boolean;
  /** ECAP.PRS: page request support (default: the value of `ats`; needs `ats`). */
  readonly pri: boolean;
  /** Superpage sizes supported, in the order 2M, 1G (default both). */
  readonly superpages: readonly SuperpageSize[];
  readonly loc: Loc;
}

/** A DMA-capable endpoint. */
export interface DeviceSpec {
  /** Unique among devices, `/^[a-z][a-z0-9_-]*$/`. */
  readonly name: string;
  /** `BB:DD.F`, lower-case hex, unique. */
  readonly bdf: string;
  /** Requester ID: bus << 8 | device << 3 | function. */
  readonly rid: number;
  /** The unit the device sits behind (`vtd`; default the first unit), or null on `mock`. */
  readonly unit: string | null;
  /** What the device does with DMA: copy buffers, or run descriptors from work queues. */
  readonly kind: DeviceKind;
  /** PASID width the device can emit, 0..20 (default 0: no PASID). */
  readonly pasidBits: number;
  /** Address Translation Services: the device caches translations in its ATC (default false). */
  readonly ats: boolean;
  /** Page Request Interface (default false; needs `ats`). */
  readonly pri: boolean;
  /** ATC entries, 1..4096 (default 32) with ATS; 0 without. */
  readonly atc: number;
  readonly loc: Loc;
}

/**
 * A user whose processes' PASIDs are charged against a limit: a node of the model's charge tree,
 * shaped like a misc cgroup with its `misc.max` (upstream's misc controller has no PASID resource).
 * @kernel kernel/cgroup/misc.c misc_cg_try_charge
 */
export interface UserSpec {
  /** Unique among users, `/^[a-z][a-z0-9_-]*$/`. */
  readonly name: string;
  /** PASIDs the user's processes may hold at once (0..2^20), or undefined for no limit. */
  readonly pasidLimit?: number;
  readonly loc: Loc;
}

/** A copy engine (`copy` steps) or a work-queue device (`submit` steps). */
export type DeviceKind = "copy-engine" | "work-queue";

/** `domain` step: the kind of domain allocated. */
export type DomainType = "paging" | "identity" | "blocked";

/** Which page-table stage a paging domain uses (VT-d first- or second-stage tables). */
export type PagingStage = "first" | "second";

/** DMA-API direction of a `dma-map` buffer (enum dma_data_direction). */
export type DmaDirection = "to-device" | "from-device" | "bidirectional";

/** A DMA's PASID: a name from `pasid-alloc` or `dma-pasid`, or a number. */
export type PasidRef = string | number;

interface StepBase {
  /** Where the step starts in the file (its op key). */
  readonly loc: Loc;
}

/**
 * Allocate a domain named `name`.
 * @kernel drivers/iommu/iommu.c iommu_paging_domain_alloc_flags
 */
export interface DomainStep extends StepBase {
  readonly op: "domain";
  readonly name: string;
  readonly type: DomainType;
  /** Paging domains only: force first- or second-stage tables (default: the driver's choice). */
  readonly stage?: PagingStage;
}

/**
 * Attach `device` to `domain`; `"default"` names the device's default (DMA-API) domain.
 * @kernel drivers/iommu/iommu.c iommu_attach_device
 */
export interface AttachStep extends StepBase {
  readonly op: "attach";
  readonly device: string;
  readonly domain: string;
}

/**
 * Allocate a global PASID named `name`.
 * @kernel drivers/iommu/iommu.c iommu_alloc_global_pasid
 */
export interface PasidAllocStep extends StepBase {
  readonly op: "pasid-alloc";
  readonly name: string;
}

/**
 * Attach `domain` to `device` at `pasid`.
 * @kernel drivers/iommu/iommu.c iommu_attach_device_pasid
 */
export interface PasidAttachStep extends StepBase {
  readonly op: "pasid-attach";
  readonly device: string;
  readonly pasid: string;
  readonly domain: string;
}

/**
 * Detach whatever is attached to `device` at `pasid`.
 * @kernel drivers/iommu/iommu.c iommu_detach_device_pasid
 */
export interface PasidDetachStep extends StepBase {
  readonly op: "pasid-detach";
  readonly device: string;
  readonly pasid: string;
}

/**
 * Give a global PASID back.
 * @kernel drivers/iommu/iommu.c iommu_free_global_pasid
 */
export interface PasidFreeStep extends StepBase {
  readonly op: "pasid-free";
  readonly pasid: string;
}

/**
 * Enable kernel DMA-API use at a PASID for `device` (iommu-core's `iommuDmaEnablePasid`); `name`
 * names the PASID.
 * @kernel drivers/dma/idxd/init.c idxd_enable_system_pasid
 */
export interface DmaPasidStep extends StepBase {
  readonly op: "dma-pasid";
  readonly device: string;
  readonly name: string;
}

/**
 * Allocate `size` bytes of host memory and map them at `iova` in `domain`.
 * @kernel drivers/iommu/iommu.c iommu_map
 */
export interface MapStep extends StepBase {
  readonly op: "map";
  readonly domain: string;
  readonly iova: number;
  readonly size: number;
  /** `IOMMU_READ | IOMMU_WRITE` bits (default both). */
  readonly perm: number;
  /** Names the host buffer (a buffer name), when given. */
  readonly name?: string;
}

/**
 * Unmap `size` bytes at `iova` from `domain`.
 * @kernel drivers/iommu/iommu.c iommu_unmap
 */
export interface UnmapStep extends StepBase {
  readonly op: "unmap";
  readonly domain: string;
  readonly iova: number;
  readonly size: number;
}

/**
 * Free a domain.
 * @kernel drivers/iommu/iommu.c iommu_domain_free
 */
export interface DomainFreeStep extends StepBase {
  readonly op: "domain-free";
  readonly domain: string;
}

/** One DMA by `device`, checked against `expect` when given. */
export interface DmaStep extends StepBase {
  readonly op: "dma";
  readonly device: string;
  /** Without a PASID (undefined), or at a named or numbered PASID. */
  readonly pasid?: PasidRef;
  readonly iova: number;
  /** 1 byte to 16 MiB. */
  readonly size: number;
  /** The file's `op`: the device reads memory or writes it. */
  readonly access: "read" | "write";
  readonly expect?: "ok" | "fault";
}

/**
 * Allocate a host buffer and map it through the DMA API.
 * @kernel drivers/iommu/dma-iommu.c iommu_dma_map_phys
 */
export interface DmaMapStep extends StepBase {
  readonly op: "dma-map";
  readonly device: string;
  readonly name: string;
  readonly size: number;
  readonly dir: DmaDirection;
}

/**
 * Unmap a `dma-map` buffer and free its host memory.
 * @kernel drivers/iommu/dma-iommu.c iommu_dma_unmap_phys
 */
export interface DmaUnmapStep extends StepBase {
  readonly op: "dma-unmap";
  readonly buffer: string;
}

/** A copy engine copies `size` bytes from IOVA `src` to IOVA `dst`. */
export interface CopyStep extends StepBase {
  readonly op: "copy";
  readonly device: string;
  readonly pasid?: PasidRef;
  readonly src: number;
  readonly dst: number;
  readonly size: number;
}

/** A work-queue device runs `count` descriptors of `size` bytes each. */
export interface SubmitStep extends StepBase {
  readonly op: "submit";
  readonly device: string;
  readonly pasid?: PasidRef;
  readonly count: number;
  readonly size: number;
}

/** A seeded random mix of `count` operations on `devices` (default every device, in file order). */
export interface RandomStep extends StepBase {
  readonly op: "random";
  readonly count: number;
  readonly devices: readonly string[];
}

/** Run `steps` `count` times. */
export interface RepeatStep extends StepBase {
  readonly op: "repeat";
  readonly count: number;
  readonly steps: readonly StepSpec[];
}

/** Hot-unplug a device. */
export interface UnplugStep extends StepBase {
  readonly op: "unplug";
  readonly device: string;
}

/** `mmap` and `mprotect`: the PROT_* bits of `@iommu-sim/sva` (`r`, `rw` or `none` in files). */
export type ProtBits = number;

/**
 * Start a process named `name` with an empty address space, its PASIDs charged to `user`.
 * @kernel kernel/fork.c mm_alloc
 */
export interface ProcessStep extends StepBase {
  readonly op: "process";
  readonly name: string;
  /** A user from `users`, or undefined: the process is charged to no one. */
  readonly user?: string;
}

/**
 * `process` maps `pages` anonymous pages (nothing is present until touched); `name` names the
 * region, whose address is the kernel's choice.
 * @kernel mm/mmap.c do_mmap
 */
export interface MmapStep extends StepBase {
  readonly op: "mmap";
  readonly process: string;
  readonly name: string;
  /** 1 page to the machine's memory. */
  readonly pages: number;
  readonly prot: ProtBits;
  /** `ok`, or the errno the mmap must fail with. */
  readonly expect: "ok" | "ENOMEM";
}

/**
 * Unmap `pages` pages of `region` from its page `page`: from its return no cache may answer for
 * them (the SVA domains' mmu notifiers flush the IOMMUs and ATCs).
 * @kernel mm/vma.c do_vmi_munmap
 */
export interface MunmapStep extends StepBase {
  readonly op: "munmap";
  readonly region: string;
  readonly page: number;
  readonly pages: number;
}

/**
 * Change the protection of `pages` pages of `region` from its page `page`.
 * @kernel mm/mprotect.c do_mprotect_pkey
 */
export interface MprotectStep extends StepBase {
  readonly op: "mprotect";
  readonly region: string;
  readonly page: number;
  readonly pages: number;
  readonly prot: ProtBits;
  /** `ok`, or `ENOMEM` when part of the range is no longer mapped. */
  readonly expect: "ok" | "ENOMEM";
}

/**
 * The process writes a pattern into `pages` pages of its `region` from page `page`, faulting
 * them in as the CPU would.
 * @kernel mm/memory.c handle_mm_fault
 */
export interface CpuWriteStep extends StepBase {
  readonly op: "cpu-write";
  readonly region: string;
  readonly page: number;
  readonly pages: number;
  /** `fault`: the write must fail (no VMA, or one without write permission). */
  readonly expect: "ok" | "fault";
}

/** The errnos a `bind` may be expected to fail with (iommu_sva_bind_device's). */
export type BindErrno =
  | "ENODEV"
  | "EINVAL"
  | "EBUSY"
  | "ENOSPC"
  | "EOVERFLOW"
  | "ENOMEM"
  | "EOPNOTSUPP";

/**
 * Bind `process`'s address space to `device` (a device driver's open): the device then works at
 * the process's PASID. Binding again adds a user to the same bond.
 * @kernel drivers/iommu/iommu-sva.c iommu_sva_bind_device
 */
export interface BindStep extends StepBase {
  readonly op: "bind";
  readonly device: string;
  readonly process: string;
  readonly expect: "ok" | BindErrno;
}

/**
 * Undo one bind of `process` to `device`.
 * @kernel drivers/iommu/iommu-sva.c iommu_sva_unbind_device
 */
export interface UnbindStep extends StepBase {
  readonly op: "unbind";
  readonly device: string;
  readonly process: string;
  /** `ENOENT`: the process holds no bond with the device. */
  readonly expect: "ok" | "ENOENT";
}

/**
 * The process exits, its bonds still in place: the notifiers' release tears its PASID entries
 * down; the PASID lives until the last unbind.
 * @kernel kernel/exit.c exit_mm
 */
export interface ExitStep extends StepBase {
  readonly op: "exit";
  readonly process: string;
}

/**
 * One DMA by `device` in `process`'s address space at `region` + `offset`, tagged with the
 * process's PASID; a page request is answered by the SVA fault handler and the DMA retried.
 */
export interface SvaDmaStep extends StepBase {
  readonly op: "sva-dma";
  readonly device: string;
  /** Whose PASID the DMA carries (default: the region's process). */
  readonly process: string;
  readonly region: string;
  /** Bytes from the region's start. */
  readonly offset: number;
  /** 1 byte to 16 MiB, within the region. */
  readonly size: number;
  readonly access: "read" | "write";
  readonly expect?: "ok" | "fault";
}

/**
 * `process` submits `count` descriptors to a work-queue device (ENQCMD: tagged with its PASID):
 * descriptor i copies page i of `src` to page i of `dst`. The process writes the descriptors in a
 * ring it maps for the step, and fresh bytes into `src`; `dst` must be present already (the
 * device has no PRI).
 */
export interface EnqcmdStep extends StepBase {
  readonly op: "enqcmd";
  readonly device: string;
  readonly process: string;
  readonly src: string;
  readonly dst: string;
  /** 1 to the pages of `src` and of `dst`. */
  readonly count: number;
  /** Descriptors that must complete, 0..count (default count). */
  readonly expect: number;
}

/** One step of a scenario, discriminated by `op` (the step's key in the file). */
export type StepSpec =
  | DomainStep
  | AttachStep
  | PasidAllocStep
  | PasidAttachStep
  | PasidDetachStep
  | PasidFreeStep
  | DmaPasidStep
  | MapStep
  | UnmapStep
  | DomainFreeStep
  | DmaStep
  | DmaMapStep
  | DmaUnmapStep
  | CopyStep
  | SubmitStep
  | RandomStep
  | RepeatStep
  | UnplugStep
  | ProcessStep
  | MmapStep
  | MunmapStep
  | MprotectStep
  | CpuWriteStep
  | BindStep
  | UnbindStep
  | ExitStep
  | SvaDmaStep
  | EnqcmdStep;

/** The op names, as they appear in files. */
export type StepOp = StepSpec["op"];
