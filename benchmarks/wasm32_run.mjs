// Runs a program from a ROMFS image on the 32-bit (wasm32) MicroPython with a fixed GC heap.
// Used by benchmarks/firmware_heap_32bit.py; the package comes from `make bench`
// (build/wasm32/node_modules).
//
//   node wasm32_run.mjs IMAGE HEAP_KIB PARAMS_JSON ENTRY
//
// IMAGE is registered with the port's `romfs` option: it sits in C memory outside the GC heap
// and is mounted at /rom, so bytecode runs in place as on a board. PARAMS_JSON goes to
// /run/params.json, the program's working directory (in-memory files: its flash). ENTRY is
// imported with sys.argv = [ENTRY, "params.json"]; an `asyncio.run(main())` in it is awaited
// (this asyncio is driven by the JS event loop and has no run()). Exit status 0 when it returns.
//
// The port grows its GC heap when a collection cannot satisfy an allocation (split heap) and
// frees an added area again once it is empty, so the heap total after a run can hide growth.
// This driver takes that away: once the VM is up it allocates all of the C heap and refuses to
// grow wasm memory, so an allocation the GC heap cannot hold raises MemoryError, as on a board.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const [imagePath, heapKiB, params, entry] = process.argv.slice(2);
const packageDir = path.resolve(import.meta.dirname, "../build/wasm32/node_modules");
const require = createRequire(path.join(packageDir, "noop.js"));
const { loadMicroPython } = await import(
  require.resolve("@micropython/micropython-webassembly-pyscript")
);

// Wrap the wasm memory growth the C allocator asks for, so that it can be refused.
let capped = false;
const instantiate = WebAssembly.instantiate;
WebAssembly.instantiate = (binary, imports) => {
  const grow = imports.env.emscripten_resize_heap;
  imports.env.emscripten_resize_heap = (size) => (capped ? 0 : grow(size));
  return instantiate(binary, imports);
};

const print = (line) => process.stdout.write(line + "\n");
const mp = await loadMicroPython({
  heapsize: Number(heapKiB) * 1024,
  romfs: readFileSync(imagePath),
  stdout: print,
  stderr: print,
  linebuffer: true,
});

// Fill the C heap (largest blocks first), then give back the 16 KiB set aside for the JS glue's
// small buffers: far less than any area the GC would add (at least its current size).
function capCHeap(module) {
  const reserve = module._malloc(16 * 1024);
  capped = true;
  for (let size = 1 << 24; size >= 8; ) {
    if (module._malloc(size) === 0) size >>= 1;
  }
  module._free(reserve);
}

mp.FS.mkdir("/run");
mp.FS.writeFile("/run/params.json", params);
capCHeap(mp._module);
try {
  await mp.runPythonAsync(`
import asyncio, os, sys
sys.path.remove("/rom")
sys.path.insert(0, "/rom")
os.chdir("/run")
sys.argv[:] = [${JSON.stringify(entry)}, "params.json"]
_mains = []
asyncio.run = _mains.append
import ${entry}
for _m in _mains:
    await _m
`);
  mp.runPython("import micropython\nmicropython.mem_info()");
} catch (error) {
  if (error.name !== "PythonError") throw error;
  print(`PythonError ${error.type}: ${error.message}`);
  process.exitCode = 1;
}
