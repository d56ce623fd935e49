// The one test-support module: the WebGPU probe and GPU buffer helpers, the fixtures folder, seeded
// random data, the fake engine with its byte-level text codec, and waiting without deadlines. Tests of
// every layer import it; nothing outside tests does.
export * from "./gpu.ts";
export * from "./fixtures.ts";
export * from "./random.ts";
export * from "./fake_engine.ts";
export * from "./wait.ts";
