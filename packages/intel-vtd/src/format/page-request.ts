// VT-d page request descriptor: what the remapping hardware writes into the page request queue for
// each PCIe page request (PRI) it receives.

import { defineLayout, type Layout } from "@iommu-sim/iommu-core/platform";

// PRQ_DESC_SIZE (32 bytes per queue slot) is declared once, in registers.ts beside the queue
// registers; re-exported here so this module is complete on its own.
export { PRQ_DESC_SIZE } from "./registers.js";

/** Type of a page request descriptor. */
export const PRQ_DESC_TYPE_PAGE_REQ = 1;

/**
 * Page request descriptor. LPIG = 1 with RD = WR = 0 is a stop marker (no response expected). With
 * PDP, qw2/qw3 carry private data that a page group response must echo.
 *
 * @spec Intel VT-d Architecture Specification 7.5.1.1 (section unverified)
 * @kernel drivers/iommu/intel/prq.c struct page_req_dsc
 */
export const PAGE_REQ_DESC: Layout = defineLayout({
  name: "page-req-desc",
  bits: 256,
  spec: "Intel VT-d Architecture Specification 7.5.1.1 (section unverified)",
  fields: [
    { name: "Type", lsb: 0, width: 8, values: { 1: "page-request" }, doc: "descriptor type" },
    { name: "PP", lsb: 8, width: 1, doc: "PASID present" },
    { name: "PDP", lsb: 9, width: 1, doc: "private data present (qw2/qw3 valid)" },
    { name: "RID", lsb: 16, width: 16, doc: "requester id" },
    { name: "PASID", lsb: 32, width: 20, doc: "PASID (if PP)" },
    { name: "ER", lsb: 52, width: 1, doc: "execute requested" },
    { name: "PM", lsb: 53, width: 1, doc: "privileged mode requested" },
    { name: "RD", lsb: 64, width: 1, doc: "read requested" },
    { name: "WR", lsb: 65, width: 1, doc: "write requested" },
    { name: "LPIG", lsb: 66, width: 1, doc: "last page in group" },
    { name: "PRGI", lsb: 67, width: 9, doc: "page request group index" },
    { name: "ADDR", lsb: 76, width: 52, addr: true, doc: "page address" },
    { name: "PRIVDATA0", lsb: 128, width: 64, doc: "private data, low qword (if PDP)" },
    { name: "PRIVDATA1", lsb: 192, width: 64, doc: "private data, high qword (if PDP)" },
  ],
});
