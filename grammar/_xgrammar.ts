// The grammar engine: xgrammar compiled to WebAssembly (npm:@mlc-ai/web-xgrammar, the engine behind vLLM's
// and web-llm's structured output), typed to the part grammar/worker.ts uses. Load it only in a Worker:
// the package's bundle is UMD inside an ES-module package, so importing it defines globalThis.xgrammar
// instead of exports, and its Emscripten loader, seeing `process`, takes Deno for Node and calls require()
// unless `location` is defined, which it is in a Worker (not on Deno's main thread). Errors are C++ fatal
// checks: the message is printed through console.error and the call throws "RuntimeError: Aborted()",
// after which the instance is not trusted again (the pool discards that Worker).

export interface XgTokenizerInfo {
  getVocabSize(): number;
  dispose(): void;
}

export interface XgCompiledGrammar {
  dispose(): void;
}

export interface XgCompiler {
  compileJSONSchema(
    schema: string,
    anyWhitespace?: boolean,
    indent?: number,
    separators?: [string, string],
    strictMode?: boolean,
  ): Promise<XgCompiledGrammar>;
  compileStructuralTag(structuralTag: unknown): Promise<XgCompiledGrammar>;
  dispose(): void;
}

export interface XgMatcher {
  acceptToken(id: number): boolean;
  getNextTokenBitmask(): Promise<Int32Array<ArrayBuffer>>;
  isTerminated(): boolean;
  dispose(): void;
}

export interface Xgrammar {
  TokenizerInfo: {
    createTokenizerInfo(
      encodedVocab: string[],
      vocabType: string,
      prependSpaceInTokenization: boolean,
      vocabSize: number,
      stopTokenIds: number[],
    ): Promise<XgTokenizerInfo>;
  };
  GrammarCompiler: {
    createGrammarCompiler(info: XgTokenizerInfo, cacheEnabled: boolean): Promise<XgCompiler>;
  };
  GrammarMatcher: {
    createGrammarMatcher(grammar: XgCompiledGrammar, overrideStopTokens?: number[]): Promise<XgMatcher>;
  };
  Testings: {
    _jsonSchemaToEBNF(
      schema: string,
      anyWhitespace?: boolean,
      indent?: number,
      separators?: [string, string],
      strictMode?: boolean,
    ): Promise<string>;
  };
}

/** Imports the bundle once and returns its namespace. */
export async function loadXgrammar(): Promise<Xgrammar> {
  await import("@mlc-ai/web-xgrammar");
  const xg = (globalThis as { xgrammar?: Xgrammar }).xgrammar;
  if (!xg?.TokenizerInfo) throw new Error("Cannot load @mlc-ai/web-xgrammar: it defined no xgrammar global");
  return xg;
}
