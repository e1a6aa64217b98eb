// @iommu-sim/sva/mm: process address spaces (mm_struct, VMAs, CPU page tables, demand paging,
// mmu notifiers).

export {};
