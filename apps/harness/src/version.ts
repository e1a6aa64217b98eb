// The harness version: the one in apps/harness/package.json, read once at load.

import { readFileSync } from "node:fs";

/** The version of `@iommu-sim/harness`, as `iommu-sim --version` prints it. */
export const HARNESS_VERSION: string = readVersion();

function readVersion(): string {
  // src/ and dist/ both sit one level below package.json.
  const text = readFileSync(new URL("../package.json", import.meta.url), "utf8");
  const version: unknown = JSON.parse(text).version;
  if (typeof version !== "string") throw new Error("apps/harness/package.json has no version");
  return version;
}
