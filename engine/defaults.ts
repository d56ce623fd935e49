// Defaults that depend on where the repository is: the embedded model.
import { fileURLToPath } from "node:url";

/** The small 2-bit QTIP model committed under models/ (see its README). */
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL("../models/llama2-qtip-2bit", import.meta.url));
