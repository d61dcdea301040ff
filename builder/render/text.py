"""Plain-text rendering of stage graphs and loop blocks: readable without any tool, within 100 columns."""
from __future__ import annotations



def render(views) -> str:
    out: list[str] = []
    for tg, sched in views:
        spec = tg.spec
        out.append(f"kernel {spec.name} ({spec.loc.file}:{spec.loc.line}), sizes {tg.dims.size_set}")
        out.append("  inputs:")
        for name, t in tg.inputs.items():
            out.append(f"    {name}: {t.describe()}")
        crossing = set(sched.crossing)
        for b in sched.blocks:
            out.append(f"  loop block {b.index}: {b.describe_domain()}")
            for st in b.stages:
                params = st.op.key_params(st.params)
                out.append(f"    stage {st.id} = {st.op.name}({params})  line {st.loc.line}")
                for port, ref in st.inputs.items():
                    mark = "  [crosses blocks]" if ref in crossing else ""
                    out.append(f"      <- {port}: {ref} {st.in_types[port].describe()}{mark}")
                for port, t in st.out_types.items():
                    mark = "  [crosses blocks]" if st.ref(port) in crossing else ""
                    out.append(f"      -> {st.ref(port)} {t.describe()}{mark}")
        out.append("  outputs:")
        for name, ref in tg.outputs.items():
            out.append(f"    {name} <- {ref} {tg.types[ref].describe()}")
        out.append("")
    return "\n".join(out)
