// Defaults that depend on where the repository is: the embedded model and the model family guess.
import { fileURLToPath } from "node:url";

/** The small 2-bit QTIP model committed under models/ (see its README). */
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL("../models/llama2-qtip-2bit", import.meta.url));

/** Chat-template family of a tokenizer: Llama 3 tokenizers have <|begin_of_text|>. */
export function modelFamily(tok: { tokenToId(t: string): number | undefined }): "llama2" | "llama3" {
  return tok.tokenToId("<|begin_of_text|>") !== undefined ? "llama3" : "llama2";
}
