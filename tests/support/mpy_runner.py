# Runs one test function on the MicroPython Unix port:
#   micropython mpy_runner.py ROOT[:ROOT...] MODULE FUNC
# Prints the pass marker on success; on failure the interpreter's traceback and exit status 1.
import sys

roots, module_name, func_name = sys.argv[1], sys.argv[2], sys.argv[3]
# The script's own directory comes first on sys.path; the import roots (the test module's and
# the repository's) replace it so package-qualified imports resolve as they do on CPython.
sys.path[0:1] = roots.split(":")
module = __import__(module_name)
for part in module_name.split(".")[1:]:
    module = getattr(module, part)
getattr(module, func_name)()
print("\n@@MPY-PASS@@")
