// The model's own assertions: the counterpart of BUG_ON, never used for guest or caller input.

/** Thrown only for a bug in iommu-sim itself; bad input from a caller or a guest never throws. */
export class ModelBug extends Error {
  override readonly name = "ModelBug";
}

/**
 * Stop on a broken invariant of the model.
 *
 * @kernel include/asm-generic/bug.h BUG
 */
export function bug(message: string): never {
  throw new ModelBug(message);
}
