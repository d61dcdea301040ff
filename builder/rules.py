"""Every diagnostic rule, once: its id, one-line summary, default hint, what it means, a minimal
failing example and the fix. `diagnostics.RULES` and `DEFAULT_HINTS`, `build --explain` and the
README's rule list are all derived from this table.

`kind` says how the example fails: `spec` examples are complete YAML files that `builder.load`
rejects (or warns about); `file` examples describe a file or an argument around the YAML; `target`
examples are YAML files whose compiled code (`build --target cuda:sm_90`) does not fit or fill the GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

# The spec every example edits: one inverse RoPE rotation (each edit must apply, see `_edit`).
BASE = """version: 1
kernels:
  rotate:
    doc: one inverse rotation of RoPE pairs
    sizes: {small: {T: 2, H: 4, R: 8}}
    dims: {HALF: R // 2}
    inputs:
      even: {shape: [T, H, HALF], dtype: bf16, layout: interleave, init: {uniform: {}}}
      odd: {shape: [T, H, HALF], dtype: bf16, layout: interleave, init: {uniform: {}}}
      cos: {shape: [T, R], dtype: bf16, init: {rope_table: {fn: cos}}}
      sin: {shape: [T, R], dtype: bf16, init: {rope_table: {fn: sin}}}
    stages:
      rot: {op: rope_apply, in: {even: even, odd: odd, cos: cos, sin: sin}, params: {direction: inverse}}
    outputs:
      out: {from: rot.even}
"""


def _edit(old: str, new: str, text: str = BASE) -> str:
    if old not in text:
        raise ValueError(f"example edit {old!r} does not apply")
    return text.replace(old, new, 1)


def _billion_laughs() -> str:
    lines = ['  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]']
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 8)]
    return "version: 1\nkernels: {}\nlaughs:\n" + "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Rule:
    id: str
    summary: str        # one line: what the rule flags
    hint: str           # the fallback hint of a diagnostic raised without a more specific one
    explain: str        # what it means and why the tool insists
    example: str        # a minimal failing YAML file (`spec`, `target`) or the situation (`file`)
    fix: str
    kind: str = "spec"  # spec | file | target
    severity: str = "error"


CATALOGUE: tuple[Rule, ...] = (
    Rule("yaml-syntax", "the file is not valid YAML",
         "check indentation and that every `key: value` pair has a space after the colon",
         "The YAML parser stopped: bad indentation, a second `:` in a plain value, an unclosed bracket or "
         "quote, a control character, or bytes that are not UTF-8. Nothing else in the file is checked "
         "until it parses.",
         _edit("doc: one inverse rotation of RoPE pairs", "doc: rotation: inverse"),
         "Quote a value that contains `: ` (`doc: \"rotation: inverse\"`), fix the indentation, save as UTF-8."),
    Rule("duplicate-key", "a mapping names the same key twice", "keep one of the two keys",
         "Plain YAML keeps the last of two equal keys silently; a spec refuses both, because one of them is "
         "a mistake that would otherwise go unnoticed. The hint names the line of the first one.",
         _edit("    dims: {HALF: R // 2}\n", "    dims: {HALF: R // 2}\n    dims: {HALF: R / 2}\n"),
         "Keep one of the two keys."),
    Rule("unknown-key", "a key the schema does not know",
         "check the spelling against the schema (builder/spec.py, or the op's params in stages/)",
         "Every mapping of a spec has a fixed set of keys: the file, kernels, inputs, stages, outputs, "
         "tolerances, init recipes and each op's `params:` (its `Params` model in stages/) reject any other, "
         "so a misspelled key is never silently ignored. The hint suggests the closest known key. "
         "`build --schema` writes the JSON Schema that lets an editor complete the keys.",
         _edit("params: {direction: inverse}", "params: {direction: inverse, blockh: 4}"),
         "Spell the key as the schema does (`block_h`), or remove it."),
    Rule("missing-key", "a required key is absent", "add the key",
         "A required key is absent: `version` and `kernels` in the file; `doc`, `sizes`, `inputs`, `stages` and "
         "`outputs` in a kernel (unless it `extends:` another); `shape`, `dtype` and `init` of an input; `op` and "
         "`in` of a stage; a param an op needs; or an input port of the op that `in:` does not wire.",
         _edit("      odd: {shape: [T, H, HALF], dtype: bf16, layout: interleave, init: {uniform: {}}}",
               "      odd: {shape: [T, H, HALF], layout: interleave, init: {uniform: {}}}"),
         "Add the key where the diagnostic points (here `dtype: bf16`)."),
    Rule("wrong-type", "a value of the wrong type", "check the value's type against the schema",
         "A value has another type than its key takes: a string where a list belongs, a mapping key that is "
         "a list, `true` or `\"2\"` where a number belongs (numbers are never read from booleans or strings).",
         _edit("sizes: {small: {T: 2, H: 4, R: 8}}", "sizes: {small: {T: \"2\", H: 4, R: 8}}"),
         "Write the value with the type the schema gives (here the integer `2`)."),
    Rule("unknown-op", "a stage names an op that stages/ does not provide", "name one of the op modules in stages/",
         "A stage's `op:` must be one of the modules of stages/ (`gather_kv`, `sparse_attention`, `rope_extract`, "
         "`rope_apply`, `rope_interleave`, `pack`, `grouped_matmul`, `quant_rowwise_int8`, `matmul_w8a8`).",
         _edit("op: rope_apply", "op: rope_aply"),
         "Name an existing op (the hint suggests the closest), or add a module for a new op to stages/."),
    Rule("unknown-ref", "an input names a tensor no kernel input or stage produces",
         "write a kernel input name or `stage_id.output_port`",
         "A stage's `in:` reads tensors by reference: a kernel input's name, or `stage_id.output_port`. The "
         "reference names neither. Also raised for `default_sizes:` or a `sizes:` entry naming a size set "
         "that does not exist.",
         _edit("in: {even: even, odd: odd,", "in: {even: even, odd: od,"),
         "Name a kernel input or an output port of a stage (the hint suggests the closest)."),
    Rule("unknown-kernel", "a kernel (for example in `extends:`) that is not defined",
         "name a kernel defined under `kernels:`",
         "`extends: NAME` deep-merges this kernel onto kernel NAME of the same file, which does not exist.",
         BASE + "  rotate_forward:\n    extends: rotat\n    doc: the same, forward\n"
                "    stages: {rot: {params: {direction: forward}}}\n",
         "Name a kernel of the file under `extends:`."),
    Rule("cycle", "stages depend on each other in a loop", "a stage may only read tensors produced before it",
         "Stages form a directed acyclic graph: following `in:` references from a stage must never lead back "
         "to it. The diagnostic prints the loop and points at the reference that closes it. Also raised "
         "for kernels whose `extends:` chain loops.",
         _edit("in: {even: even, odd: odd,", "in: {even: even, odd: rot.odd,"),
         "Read a tensor produced earlier (here the input `odd`)."),
    Rule("shape-mismatch", "an edge carries a tensor of another shape than its consumer needs",
         "make the producer's shape match what this stage needs, or wire another tensor",
         "An op checks the ranks and extents of what it reads (its module's docstring gives its math): the "
         "tensor wired to the port has another shape. The message shows both sides with dims and numbers.",
         _edit("cos: {shape: [T, R]", "cos: {shape: [T, 2]"),
         "Give the producer the shape the op needs, or wire another tensor."),
    Rule("dtype-mismatch", "an edge carries a tensor of another dtype than its consumer needs",
         "make the producer's dtype match what this stage needs, or insert a cast stage",
         "An op needs given dtypes on some ports (int32 indices, fp32 sinks, the same dtype for pairs that "
         "are computed together); the tensor wired to the port has another.",
         _edit("      odd: {shape: [T, H, HALF], dtype: bf16", "      odd: {shape: [T, H, HALF], dtype: fp32"),
         "Make the producer's dtype what the op needs."),
    Rule("layout-mismatch", "an edge carries RoPE lanes in another layout than its consumer needs",
         "make the producer and this stage agree on `layout:`",
         "The RoPE layout (`interleave`: pair k in lanes 2k, 2k+1; `split_half`: lanes k, R/2 + k) is a typed "
         "property of every edge. A stage fed lanes in one layout while it declares, or its other input "
         "carries, the other would rotate the wrong lanes; here `odd` is split-half and `even` interleaved.",
         _edit("      odd: {shape: [T, H, HALF], dtype: bf16, layout: interleave",
               "      odd: {shape: [T, H, HALF], dtype: bf16, layout: split_half"),
         "Make the producer and the stage agree on `layout:`."),
    Rule("output-not-produced", "a kernel output names a tensor nothing produces",
         "name `stage_id.output_port` of a stage, or a kernel input",
         "An output's `from:` must name `stage_id.output_port` of a stage of the kernel, or a kernel input.",
         _edit("from: rot.even", "from: rot.evn"),
         "Name an output port of a stage (the hint suggests the closest)."),
    Rule("unused", "an input or stage whose result nothing reads (a warning)", "remove it, or wire it into a stage",
         "A warning, not an error: the kernel still builds. An input that no stage or output reads, or a "
         "stage none of whose outputs is read, is dead weight in every generated file.",
         _edit("      sin: {shape: [T, R]", "      spare: {shape: [T], dtype: fp32, init: {zeros: {}}}\n"
                                           "      sin: {shape: [T, R]"),
         "Remove it, or wire it into a stage.", severity="warning"),
    Rule("undefined-dim", "a shape or expression uses a dim that is not defined",
         "define the dim under `dims:` or in every size set",
         "Every name in a shape or dim expression must be a free dim given by each of the kernel's size sets, "
         "or a derived dim under `dims:`.",
         _edit("dims: {HALF: R // 2}", "dims: {HALF: ROPE // 2}"),
         "Define the dim in every size set or under `dims:`, or correct its spelling."),
    Rule("circular-dim", "dims defined in terms of each other", "one of the dims must come from the size sets",
         "Derived dims are evaluated from the size sets; two dims defined through each other have no value.",
         _edit("dims: {HALF: R // 2}", "dims: {HALF: R2 // 4, R2: HALF * 4}"),
         "Define one of them from the size sets."),
    Rule("bad-expr", "an expression that is not plain arithmetic over dims",
         "write plain arithmetic over dims and numbers: + - * / // % **, min(), max()",
         "Dim expressions are parsed, never run: only numbers, dim names, + - * / // % **, unary minus, and "
         "min()/max() are accepted. Anything else (attributes, other calls, comparisons, strings), a division "
         "by zero or a complex result is refused.",
         _edit("dims: {HALF: R // 2}", "dims: {HALF: R.bit_length()}"),
         "Write plain arithmetic over dims and numbers."),
    Rule("bad-value", "a value outside the range its parameter accepts",
         "see the accepted range in the op's or schema's description",
         "The value has the right type but is outside what its key accepts: a dtype or layout that does not "
         "exist, a negative tolerance, a NaN, an extent that is not a whole number >= 1, a tile size that is "
         "not a power of two or does not fit its extent (the hint lists the sizes that fit), a param an op "
         "cannot work with.",
         _edit("params: {direction: inverse}", "params: {direction: inverse, block_h: 3}"),
         "Use a value in the accepted range (here a power of two such as 4, or leave `block_h` out)."),
    Rule("illegal-fuse", "a `fuse:` group the schedule cannot run as one loop block",
         "fuse only adjacent stages with one iteration domain, or drop the `fuse:` group",
         "A `fuse:` group runs its stages in one loop block. It must name two or more existing stages, each "
         "in one group, adjacent in the schedule, with one iteration domain, each reading the others' "
         "outputs only at its own domain point.",
         _edit("    outputs:\n", "    fuse: [[rot, rotate_again]]\n    outputs:\n"),
         "Fuse adjacent stages with one iteration domain, or drop the group."),
    Rule("bad-name", "a name that cannot become an identifier of generated code or a file name",
         "use letters, digits and `_`, starting with a letter",
         "Names of kernels, size sets, dims, inputs, stages and outputs become identifiers of generated code "
         "and parts of output paths: at most 64 characters of letters, digits and `_`, not a Python keyword "
         "or builtin, not a name the generated files reserve (`torch`, `run`, `golden_*`...). A kernel's dims, "
         "inputs and outputs must differ from each other, and kernel names must differ after case-folding.",
         _edit("rot: {op: rope_apply", "rot-1: {op: rope_apply").replace("from: rot.even", "from: rot-1.even"),
         "Rename it (here `rot_1`)."),
    Rule("bad-tag", "a YAML tag outside the core schema (a spec holds only strings, numbers, booleans, null)",
         "remove the tag",
         "A spec is data: tags such as `!!python/name:` or custom `!tags` are never constructed, whatever "
         "they name.",
         _edit("doc: one inverse rotation", "doc: !!python/name:os.system one inverse rotation"),
         "Remove the tag."),
    Rule("missing-file", "the spec file does not exist",
         "run `build` where kernels.yaml is, or name the file with `--file`",
         "`build` reads ./kernels.yaml unless `--file` names another file, and that file does not exist.",
         "build --file no_such_file.yaml      # in a folder without that file",
         "Run `build` where kernels.yaml is, or name the file with `--file`.", kind="file"),
    Rule("not-a-file", "the spec path is not a regular file, or cannot be opened",
         "name a YAML file with `--file`",
         "Only regular files are read: a directory, a device (`/dev/zero` never ends), a FIFO (it would block) "
         "or a file without read permission is refused.",
         "build --file /dev/zero             # or a directory, a FIFO, an unreadable file",
         "Name a readable YAML file with `--file`.", kind="file"),
    Rule("file-too-large", "the spec file is larger than the loader reads", "split the library into several files",
         "Spec files of more than 16 MiB are not read: real kernel libraries are a few kB, and the limit "
         "bounds the work a file given in a pull request can cause.",
         "build --file huge.yaml             # a kernels file of more than 16 MiB",
         "Split the library into several files.", kind="file"),
    Rule("too-deep", "YAML nested deeper than the loader allows", "a kernel spec needs only a few levels of nesting",
         "YAML nested more than 32 levels is not read (a spec needs about 6): deep nesting only serves to "
         "exhaust the parser.",
         _edit("doc: one inverse rotation of RoPE pairs", "doc: " + "[" * 40 + "]" * 40),
         "Nest less; a spec needs only a few levels."),
    Rule("too-many-nodes", "YAML whose aliases expand to more nodes than the loader allows",
         "use fewer or smaller aliases",
         "Anchors and aliases (`&a`, `*a`, `<<: *a`) are welcome, but the nodes they add when expanded are "
         "counted: more than 500,000 (a 'billion laughs' file) are refused before they are built.",
         _billion_laughs(),
         "Use fewer or smaller aliases."),
    Rule("expr-too-complex", "a dim expression beyond the evaluator's bounds (length, operations, magnitude)",
         "write a short expression; compute large constants outside the spec",
         "Dim expressions are bounded: at most 200 characters and 64 terms, exponents of at most 64 that "
         "cannot be stacked, integers within int64.",
         _edit("dims: {HALF: R // 2}", "dims: {HALF: R // 2, BIG: 10 ** 100}"),
         "Write a short expression; compute large constants outside the spec."),
    Rule("tensor-too-large", "a tensor larger than the byte limit (`--max-bytes`)",
         "use smaller sizes, or raise the limit with `--max-bytes`",
         "The tensors a size set implies (inputs and every stage output) are added up before anything is "
         "allocated or emitted; more than 8 GiB per kernel is refused unless `--max-bytes` raises the limit.",
         _edit("{small: {T: 2, H: 4, R: 8}}", "{small: {T: 2000000000, H: 4, R: 8}}"),
         "Use smaller sizes, or raise the limit with `--max-bytes 64G`."),
    Rule("too-many-stages", "a kernel with more stages than the loader allows", "split the kernel",
         "A kernel may have at most 20,000 stages (real kernels have about ten); more are not type-checked.",
         "a kernel whose `stages:` mapping has 20,001 entries (a generated file)",
         "Split the kernel.", kind="file"),
    Rule("gpu-resources",
         "a loop block compiled for a `--target` GPU does not compile, exceeds its shared memory, or spills",
         "change the tile params (`block_*`) of the block's stages",
         "With `build --target cuda:sm_90` every loop block is compiled by Triton for that GPU. A block that "
         "does not compile, needs more shared memory than one program may have, or spills registers to "
         "local memory cannot run well (or at all) there. Reported at the block's first stage with tile "
         "params; here one program holds a whole row of 4,194,304 elements and the block does not compile.",
         """version: 1
kernels:
  quant:
    doc: int8 quantization of very wide rows
    sizes: {small: {T: 2, N: 4194304}}
    inputs:
      x: {shape: [T, N], dtype: bf16, init: {uniform: {}}}
    stages:
      q: {op: quant_rowwise_int8, in: {x: x}}
    outputs:
      y: {from: q.q}
""",
         "Change the tile params (`block_*`) the hint names, or the sizes; run `build --check --no-verify "
         "--target cuda:sm_90` again.", kind="target"),
    Rule("gpu-underuse",
         "a loop block compiled for a `--target` GPU leaves tensor cores or SMs idle (a warning)",
         "change the tile params (`block_*`) of the block's stages",
         "A warning: the block compiles and fits, but a `tl.dot` runs on CUDA cores instead of tensor cores "
         "(fewer than 16 rows, columns or depth), or a block moving 8 MB or more runs fewer programs than the "
         "GPU has SMs. Here a 32 MB weight is read by 16 programs of 256 columns each.",
         """version: 1
kernels:
  project:
    doc: one token batch through a [4096, 4096] bf16 weight
    sizes: {small: {T: 16, K: 4096, N: 4096}}
    inputs:
      x: {shape: [T, K], dtype: bf16, init: {uniform: {}}}
      w: {shape: [K, N], dtype: bf16, init: {uniform: {}}}
    stages:
      proj: {op: matmul, in: {x: x, w: w}, params: {weight_layout: kn, block_n: 256}}
    outputs:
      y: {from: proj.y}
""",
         "Feed tensor cores (bf16/int8 operands, tiles of at least 16) and give big blocks at least one "
         "program per SM through the tile params the hint names.", kind="target", severity="warning"),
)

BY_ID = {r.id: r for r in CATALOGUE}
