#!/usr/bin/env node
// The `iommu-sim` command: loads the harness through its own package name, so that under
// `node --conditions=source --import tsx` it runs the TypeScript sources and otherwise dist/.
import { exitQuietlyOnEpipe, main } from "@iommu-sim/harness";

exitQuietlyOnEpipe(process.stdout);
process.exitCode = await main(process.argv);
