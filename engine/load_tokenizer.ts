// Finds and loads the tokenizer of a model directory: the explicit directory when given, else the
// model directory, else the base model named by config.json's _name_or_path beside it (published
// QTIP checkpoints hold no tokenizer). The error lists every place tried.
import { openCheckpoint, resolveTokenizerDir } from "./checkpoint.ts";
import { Tokenizer } from "./tokenizer.ts";

export async function loadTokenizer(modelDir: string, tokenizerDir?: string): Promise<Tokenizer> {
  const ckpt = await openCheckpoint(modelDir);
  try {
    const dir = await resolveTokenizerDir({ modelDir, tokenizerDir, config: ckpt.config });
    return await Tokenizer.fromDir(dir);
  } finally {
    ckpt.close();
  }
}
