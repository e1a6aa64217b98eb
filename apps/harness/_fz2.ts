import { runVtdFuzz } from "./src/fuzz/vtd-fuzz.js";

const cats = new Map<string, number>();
for (const mode of ["scalable", "legacy"] as const)
  for (const cachingMode of [false, true])
    for (const cache of ["maximal", "minimal"] as const)
      for (let seed = 1; seed <= 15; seed++) {
        const r = runVtdFuzz({ seed, ops: 400, mode, cachingMode, cache });
        for (const v of r.violations) {
          const k = `${mode} cm=${cachingMode} ${cache} ${v.kind} ${v.message
            .replace(/0x[0-9a-f]+/g, "X")
            .replace(/\d+/g, "N")
            .slice(0, 110)}`;
          cats.set(k, (cats.get(k) ?? 0) + 1);
        }
      }
for (const [k, n] of [...cats].sort()) console.log(n, k);
