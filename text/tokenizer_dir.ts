// Finds and loads the tokenizer of a model directory: the explicit directory when given, else the model
// directory, else the base model named by config.json's `_name_or_path` (published QTIP checkpoints hold no
// tokenizer and name their fp16 source). The caller reads `_name_or_path` from the checkpoint, so text/
// never imports engine/. The error lists every place tried.
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { Tokenizer } from "./tokenizer.ts";

export interface TokenizerDirOptions {
  modelDir: string;
  /** An explicit directory (--tokenizer); when given, nothing else is tried. */
  tokenizerDir?: string;
  /** The checkpoint config's `_name_or_path`, or null when it has none. */
  nameOrPath: string | null;
}

/**
 * The directory holding tokenizer.json: the explicit one, else the model directory, else the model named
 * by `_name_or_path`, first as a sibling of the model directory, then as a path in its own right.
 */
export async function resolveTokenizerDir(options: TokenizerDirOptions): Promise<string> {
  const { modelDir, tokenizerDir, nameOrPath } = options;
  if (tokenizerDir !== undefined) {
    if (await exists(join(tokenizerDir, "tokenizer.json"))) return tokenizerDir;
    throw new Error(
      `Cannot load the tokenizer: "${join(tokenizerDir, "tokenizer.json")}" does not exist ` +
        `(the tokenizer directory was given explicitly)`,
    );
  }
  const candidates = [modelDir];
  if (nameOrPath) {
    candidates.push(join(dirname(resolve(modelDir)), basename(nameOrPath)));
    candidates.push(isAbsolute(nameOrPath) ? nameOrPath : resolve(nameOrPath));
  }
  const tried: string[] = [];
  for (const dir of candidates) {
    const path = join(dir, "tokenizer.json");
    if (tried.some((t) => resolve(t) === resolve(path))) continue;
    tried.push(path);
    if (await exists(path)) return dir;
  }
  throw new Error(
    `Cannot find tokenizer.json for model "${modelDir}": tried ${tried.map((t) => `"${t}"`).join(", ")}; ` +
      `pass the tokenizer directory explicitly`,
  );
}

/** The tokenizer `resolveTokenizerDir` finds, loaded. */
export async function loadTokenizer(options: TokenizerDirOptions): Promise<Tokenizer> {
  return await Tokenizer.fromDir(await resolveTokenizerDir(options));
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
