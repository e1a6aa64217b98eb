// The vitest project of the harness: its tests run on the TypeScript sources of every package.
import { defineProject } from "vitest/config";

export default defineProject({
  ssr: { resolve: { conditions: ["source", "module", "node", "development|production"] } },
  test: { name: "harness", include: ["src/**/*.test.ts", "test/**/*.test.ts"] },
});
