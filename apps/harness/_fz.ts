import { runVtdFuzz } from "./src/fuzz/vtd-fuzz.js";

let bad = 0;
for (const mode of ["scalable", "legacy"] as const)
  for (const cachingMode of [false, true])
    for (const cache of ["maximal", "minimal"] as const)
      for (let seed = 1; seed <= 15; seed++) {
        const r = runVtdFuzz({ seed, ops: 400, mode, cachingMode, cache });
        if (r.violationsTotal > 0) {
          bad++;
          if (bad <= 4) {
            console.log(
              mode,
              cachingMode,
              cache,
              seed,
              r.firstViolationOp,
              r.violations.slice(0, 2).map((v) => v.kind + ": " + v.message),
            );
            console.log(r.log.slice(-8).join("\n"));
          }
        }
      }
console.log("bad runs", bad);
