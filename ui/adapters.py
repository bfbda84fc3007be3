"""The Adapters tab: the loaded adapters with their cards, and "Add your own adapter".

An adapter added here belongs to the visitor's session (``dlp/session_adapters.py``): it appears in their
router chart, Compare columns, Manual mix sliders and this table, nobody else's, and it is dropped when
the tab closes. On a local server, "keep for everyone" writes it into the manifest instead, as
``python -m dlp add-adapter`` does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gradio as gr

from dlp.adapter_admin import keep_for_everyone
from dlp.adapters import resolve_folder
from dlp.errors import DLPError
from dlp.session_adapters import MAX_PER_SESSION, MAX_VISITOR_BYTES, MAX_VISITOR_RANK, shared_server
from dlp.uploads import adapter_folder

from .common import message, session_of

HEADERS = ["name", "task", "rank", "strength", "targets", "size", "description"]
EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "byo"  # a LoRA that is not shipped in the manifest


def table_rows(engine, session: str | None) -> list[list]:
    rows = []
    for a in engine.manifest.adapters:
        info = engine.adapters.get(a.name)
        rows.append([a.name, a.task, info.rank if info else "-", info.strength if info else "-",
                     _targets(info) if info else "-",
                     f"{info.size_bytes / 1e6:.2f} MB" if info else "-", a.description])
    for name in engine.visitors.names(session):
        v = engine.visitors.get(session, name)
        if v is not None:
            rows.append([name, "yours (this session only)", v.info.rank, v.info.strength, _targets(v.info),
                         f"{v.info.size_bytes / 1e6:.2f} MB", f"Routed from your {len(v.examples)} example prompts"])
    return rows


def _targets(info) -> str:
    return " ".join(t.removesuffix("_proj") for t in info.targets)


def build(engine, demo: gr.Blocks, manual) -> None:
    """``manual``: the Manual mix tab's slider slots, refreshed when this visitor's adapters change."""
    shared = shared_server()
    table = gr.Dataframe(table_rows(engine, None), headers=HEADERS, interactive=False, wrap=True,
                         column_widths=[125, 190, 55, 85, 140, 85, 420], elem_id="adapters-table")

    def refreshed(session: str, status: str) -> list:
        mine = engine.visitors.names(session)
        return [status, table_rows(engine, session), gr.Dropdown(choices=mine, value=mine[-1] if mine else None),
                *manual.slot_updates(session)]

    def add(files, hub_id, name, examples_text, keep, request: gr.Request, progress=gr.Progress()):
        """Upload or hub id, a name and example prompts -> an adapter for this session (or for everyone)."""
        session = session_of(request)
        folder, fetched = None, False
        try:
            if not getattr(request, "session_hash", None):
                raise DLPError("No session: open the page to add an adapter")
            files = [f for f in (files or []) if f]
            hub_id = (hub_id or "").strip()
            if files and hub_id:
                raise DLPError("Give either uploaded files or a hub id, not both")
            if not files and not hub_id:
                raise DLPError("Upload adapter_config.json + adapter_model.safetensors (or a zip), or give a hub id")
            examples = [line.strip() for line in (examples_text or "").splitlines() if line.strip()]
            progress(0.05, desc="Reading the adapter")
            if files:
                folder = adapter_folder(files, MAX_VISITOR_BYTES)
            else:
                folder, fetched = resolve_folder(hub_id, True, MAX_VISITOR_BYTES), True
            if keep and not shared:
                progress(0.2, desc="Teaching the shared router")
                result = keep_for_everyone(engine, (name or "").strip(), folder, examples)
                status = (f"Added **{result['added']}** for everyone: it is in `adapters_manifest.json` and the shared "
                          f"router. Reload the page to see it in every tab.")
            else:
                adapter = engine.visitors.add(session, name, folder, examples,
                                              progress=lambda f: progress(0.2 + 0.8 * f, desc="Teaching your router"))
                route = engine.route(adapter.examples[0], 1.0, 0, "renorm", engine.scope(session))
                status = (f"Added **{adapter.name}** (rank {adapter.info.rank}, {', '.join(adapter.info.targets)}) for "
                          f"this session. Its first example now routes to it with p = "
                          f"{route.probs[adapter.name]:.2f}. Try it in **Compare** and **Manual mix**; it goes away "
                          f"when you close or reload the tab.")
            return refreshed(session, status)
        except Exception as exc:  # noqa: BLE001 - one message; the form keeps what was typed
            gr.Warning(message(exc))
            return [f"**Not added:** {message(exc)}", gr.skip(), gr.skip(), *[gr.skip()] * MAX_PER_SESSION]
        finally:
            if folder is not None and not fetched:
                shutil.rmtree(folder, ignore_errors=True)

    def remove(name, request: gr.Request):
        session = session_of(request)
        try:
            if not name:
                raise DLPError("Pick one of your adapters to remove")
            engine.visitors.remove(session, name)
            return refreshed(session, f"Removed **{name}**; routing is back to what it was without it.")
        except Exception as exc:  # noqa: BLE001
            gr.Warning(message(exc))
            return [f"**Not removed:** {message(exc)}", gr.skip(), gr.skip(), *[gr.skip()] * MAX_PER_SESSION]

    def fill_example():
        """The form, filled with the example adapter: the visitor sees what it needs, then presses Add."""
        folder = EXAMPLE / "shakespeare"
        rows = (EXAMPLE / "shakespeare.examples.jsonl").read_text(encoding="utf-8").splitlines()
        prompts = [json.loads(r)["prompt"] for r in rows if r.strip()]
        return ([str(folder / "adapter_config.json"), str(folder / "adapter_model.safetensors")], "", "shakespeare",
                "\n".join(prompts))

    with gr.Accordion("Add your own adapter", open=True, elem_id="byo"):
        gr.Markdown(
            f"A PEFT LoRA trained for this base model: `adapter_config.json` + `adapter_model.safetensors` (what "
            f"`save_pretrained` writes), or a zip of them, or a hub id. Give it a name and at least 5 prompts a "
            f"visitor would type for it; the router learns it from them in seconds. It is **yours**: other "
            f"visitors never see it or its routing, and it is dropped when you close or reload the tab. Limits: "
            f"{MAX_PER_SESSION} per visitor, rank ≤ {MAX_VISITOR_RANK}, {MAX_VISITOR_BYTES // 2**20} MB; pickled "
            f"`.bin`/`.pt` weights are refused.")
        with gr.Row():
            with gr.Column(min_width=280):
                files = gr.File(label="Adapter files or a zip", file_count="multiple", elem_id="byo-files",
                                file_types=[".json", ".safetensors", ".zip", ".bin", ".pt"])
                hub = gr.Textbox(label="…or a hub id", placeholder="user/my-lora",
                                 elem_id="byo-hub")
            with gr.Column(min_width=280):
                name = gr.Textbox(label="Name", placeholder="poetry", max_length=40, elem_id="byo-name")
                examples = gr.Textbox(label="Example prompts, one per line (at least 5)", lines=6,
                                      placeholder="Write a poem about the sea\nA haiku about autumn leaves\n…",
                                      elem_id="byo-examples")
                keep = gr.Checkbox(False, visible=not shared, elem_id="byo-keep",
                                   label="Keep for everyone: write it into adapters_manifest.json and the shared router "
                                         "(this local server only)")
        with gr.Row():
            add_btn = gr.Button("Add adapter", variant="primary", elem_id="byo-add")
            example_btn = gr.Button("Fill in an example (a Shakespeare-style LoRA)", elem_id="byo-example",
                                    visible=(EXAMPLE / "shakespeare" / "adapter_model.safetensors").is_file())
        status = gr.Markdown("", elem_id="byo-status")
        with gr.Row():
            mine = gr.Dropdown(choices=[], label="Your adapters", elem_id="byo-mine", allow_custom_value=False)
            remove_btn = gr.Button("Remove", elem_id="byo-remove")
    for a in engine.manifest.adapters:
        info = engine.adapters.get(a.name)
        with gr.Accordion(f"Card: {a.name}", open=False):
            card = (info.folder / "README.md") if info else None
            gr.Markdown(card.read_text(encoding="utf-8") if card and card.is_file() else "(no card)")
    outputs = [status, table, mine, *manual.slots]
    add_btn.click(add, [files, hub, name, examples, keep], outputs, api_name="add_adapter", concurrency_limit=1)
    example_btn.click(fill_example, None, [files, hub, name, examples], api_name=False)
    remove_btn.click(remove, [mine], outputs, api_name="remove_adapter")

    def end_session(request: gr.Request):
        engine.visitors.drop(session_of(request))

    demo.unload(end_session)  # the tab closed: its adapters go, and so does its private router
