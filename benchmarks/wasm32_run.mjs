// Runs a program from a ROMFS image on the 32-bit (wasm32) MicroPython with a fixed GC heap.
// Used by benchmarks/firmware_heap_32bit.py, which puts its `wasm32_boot` module (the Python
// half of this driver) in the image; `make bench` installs the port into build/wasm32.
//
//   node wasm32_run.mjs IMAGE HEAP_KIB PARAMS_JSON ENTRY
//
// IMAGE goes to the port's `romfs` option: it sits in C memory outside the GC heap and is
// mounted at /rom, so bytecode runs in place as on a board. PARAMS_JSON becomes
// /run/params.json in the program's working directory (in-memory files: its flash).
// wasm32_boot.run(ENTRY) imports ENTRY and ends the process; exit status 0 when the program
// (its asyncio.run(main()), if it has one) returns, 1 with a traceback when it raises.
import { readFileSync, writeSync } from "node:fs";
import path from "node:path";

const [imagePath, heapKiB, params, entry] = process.argv.slice(2);
const { loadMicroPython } = await import(
  path.resolve(
    import.meta.dirname,
    "../build/wasm32/node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs",
  )
);
const print = (line) => writeSync(1, line + "\n"); // synchronous: nothing lost on exit

// This port grows its GC heap when an allocation does not fit (split heap). To measure a
// fixed heap, let the C allocator ask for wasm memory while the VM starts, then refuse.
let capped = false;
const instantiate = WebAssembly.instantiate;
WebAssembly.instantiate = (binary, imports) => {
  const grow = imports.env.emscripten_resize_heap;
  imports.env.emscripten_resize_heap = (size) => (capped ? 0 : grow(size));
  return instantiate(binary, imports);
};

const mp = await loadMicroPython({
  heapsize: Number(heapKiB) * 1024,
  romfs: readFileSync(imagePath),
  stdout: print,
  stderr: print,
  linebuffer: true,
});

// Then fill the C heap (largest blocks first) and give back 16 KiB for the JS glue's small
// buffers: far less than a GC heap area the port would add (at least the heap's current size),
// so an allocation the GC heap cannot hold raises MemoryError, as on a board.
function capCHeap(module) {
  const reserve = module._malloc(16 * 1024);
  capped = true;
  for (let size = 1 << 24; size >= 8; ) {
    if (module._malloc(size) === 0) size >>= 1;
  }
  module._free(reserve);
}

// asyncio's scheduler, called with a delay in ms: wasm32_boot runs one task step per call.
// setImmediate when it is due now (setTimeout would wait at least 1 ms).
globalThis.wasm32Scheduler = (step) => {
  let immediate = null;
  let timer = null;
  return (dt) => {
    clearImmediate(immediate);
    clearTimeout(timer);
    if (dt > 0) timer = setTimeout(step, dt);
    else immediate = setImmediate(step);
  };
};
globalThis.wasm32Exit = (status) => process.exit(status);
process.on("uncaughtException", (error) => {
  print(`${error.name} ${error.type ?? ""}: ${error.message}`);
  process.exit(1);
});

mp.FS.mkdir("/run");
mp.FS.writeFile("/run/params.json", params);
capCHeap(mp._module);
try {
  await mp.runPythonAsync(`import wasm32_boot\nwasm32_boot.run(${JSON.stringify(entry)})`);
} catch (error) {
  if (error.name !== "PythonError") throw error;
  print(`${error.type}: ${error.message}`);
  process.exit(1);
}
