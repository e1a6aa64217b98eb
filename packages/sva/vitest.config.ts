import { defineProject } from "vitest/config";

export default defineProject({
  ssr: { resolve: { conditions: ["source", "module", "node", "development|production"] } },
  test: { name: "sva", include: ["src/**/*.test.ts", "test/**/*.test.ts"] },
});
