#!/usr/bin/env python3
"""Build the tiny test model for edge-gateway from scratch (no downloads).

Steps (all seeded / deterministic for a given thread count):
  1. generate a synthetic English corpus (plain sentences + chat dialogues)
     from templates in this file -> no third-party text, no licence issues;
  2. train a byte-level BPE tokenizer (vocab 4096) with chat special tokens;
  3. train a small LlamaForCausalLM (hidden 256, 4 layers, 8 heads, 2 KV heads)
     on CPU for a fixed number of steps;
  4. save a Hugging Face folder (config, generation_config, safetensors,
     tokenizer.json, tokenizer_config.json with a chat_template).

Run inside the optimum venv (torch + transformers 4.57 + tokenizers):
    python onnx/train_tiny.py --out .venv/build/hf-tiny
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

SEED = 1234

SPECIAL_TOKENS = [
    "<s>",  # 0 bos
    "</s>",  # 1
    "<unk>",  # 2
    "<pad>",  # 3
    "<|system|>",  # 4
    "<|user|>",  # 5
    "<|assistant|>",  # 6
    "<|end|>",  # 7  eos for chat / generation
]
BOS, EOS_TEXT, UNK, PAD, END = "<s>", "</s>", "<unk>", "<pad>", "<|end|>"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# --------------------------------------------------------------------------
# 1. corpus
# --------------------------------------------------------------------------
SITES = ["factory", "plant", "clinic", "branch office", "warehouse", "depot", "workshop", "lab"]
CITIES = ["Berlin", "Lyon", "Porto", "Oslo", "Austin", "Osaka", "Zürich", "Málaga", "München", "Québec", "Tokyo", "Seoul"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MACHINES = ["machine", "press", "pump", "conveyor", "robot arm", "compressor", "boiler", "printer", "scanner", "generator"]
STATES = ["running normally", "stopped for maintenance", "waiting for parts", "running at half speed",
          "back online", "under inspection", "ready for the next shift", "offline until tomorrow"]
VEHICLES = ["truck", "van", "forklift", "delivery van", "bus", "ambulance", "trailer"]
PEOPLE = ["the technician", "the nurse", "the manager", "the driver", "the operator", "the engineer",
          "the doctor", "the clerk", "the supervisor", "the inspector"]
NAMES = ["Anna", "Ben", "Chloé", "David", "Elif", "Frank", "Grace", "Hiro", "Inès", "Jonas", "Jürgen", "Mei", "René", "Sofia"]
WEATHER = ["sunny", "cloudy", "rainy", "windy", "cold", "warm", "foggy", "snowy", "hot", "humid"]
PARTS = ["filter", "belt", "valve", "sensor", "battery", "motor", "cable", "fan", "bearing", "tire"]
ACTIONS = ["replaced", "checked", "cleaned", "repaired", "ordered", "tested", "calibrated", "inspected"]
ITEMS = ["boxes", "parcels", "pallets", "samples", "orders", "forms", "invoices", "patients", "parts", "reports"]
TIMES = ["in the morning", "in the afternoon", "at noon", "at night", "before the shift", "after lunch", "at 8 o'clock", "at 17:30"]
EMOJI = ["✅", "⚠️", "🔧", "🚚", "🏭", "☀️", "🌧️"]
CJK = ["工場", "東京", "病院", "倉庫", "機械"]
LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
NUM_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
             "eleven", "twelve", "twenty", "fifty", "a hundred"]


class World:
    """Fixed facts (seeded) so that the corpus is consistent: the same question always gets
    the same answer, which makes the tiny model's greedy output confident and prompt-dependent."""

    def __init__(self, seed: int) -> None:
        r = random.Random(seed)
        self.weather = {c: r.choice(WEATHER) for c in CITIES}
        self.state = {m: r.choice(STATES) for m in MACHINES}
        self.fixer = {m: r.choice(PEOPLE) for m in MACHINES}
        self.fix_day = {m: r.choice(DAYS) for m in MACHINES}
        self.action = {m: r.choice(ACTIONS) for m in MACHINES}
        self.price = {p: money(r) for p in PARTS}
        self.opens = {c: r.choice(TIMES) for c in CITIES}
        self.closes = {c: r.randint(16, 20) for c in CITIES}
        self.site_city = {s: r.choice(CITIES) for s in SITES}
        self.veh_part = {v: r.choice(PARTS) for v in VEHICLES}
        self.veh_leaves = {v: r.choice(TIMES) for v in VEHICLES}
        self.patients = {d: r.randint(5, 120) for d in DAYS}
        self.works_at = {n: (r.choice(SITES), r.choice(CITIES)) for n in NAMES}
        self.cjk = {s: r.choice(CJK) for s in SITES}
        self.emoji = {m: r.choice(EMOJI) for m in MACHINES}


def money(r: random.Random) -> str:
    v = r.randint(5, 2500)
    return r.choice([f"€{v}", f"{v} €", f"${v}", f"{v} euros", f"{v}.{r.randint(0, 99):02d} €"])


def sentence(r: random.Random, w: World) -> str:
    line = r.randint(1, 9)
    m = r.choice(MACHINES)
    c = r.choice(CITIES)
    s = r.choice(SITES)
    v = r.choice(VEHICLES)
    p = r.choice(PARTS)
    n = r.choice(NAMES)
    t = r.randint(0, 11)
    d = r.choice(DAYS)
    templates = [
        lambda: f"The {m} on line {line} is {w.state[m]}.",
        lambda: f"The {m} on line {line} is {w.state[m]}.",
        lambda: f"Yesterday the {m} on line {line} was {w.action[m]} by {w.fixer[m]} on {w.fix_day[m]}.",
        lambda: f"On {d} the {s} in {w.site_city[s]} handled {r.randint(10, 900)} {r.choice(ITEMS)}.",
        lambda: f"The weather in {c} is {w.weather[c]} today, so the {v} will leave {w.veh_leaves[v]}.",
        lambda: f"{n} {w.action[m]} the {w.veh_part[v]} of the {v} {w.veh_leaves[v]}.",
        lambda: f"Our {s} has {NUM_WORDS[t]} {v}s and {NUM_WORDS[(t + 3) % len(NUM_WORDS)]} {m}s.",
        lambda: f"The new {p} costs {w.price[p]} and arrives on {d}.",
        lambda: f"The clinic saw {w.patients[d]} patients on {d}.",
        lambda: f"The branch office in {c} opens {w.opens[c]} and closes at {w.closes[c]}:00.",
        lambda: f"Maintenance report: the {m} on line {line} was {w.action[m]} and is {w.state[m]}. {w.emoji[m]}",
        lambda: f"Every {v} needs a new {w.veh_part[v]}; the repair costs {w.price[w.veh_part[v]]}.",
        lambda: f"{n} works at the café next to the {w.works_at[n][0]} in {w.works_at[n][1]}.",
        lambda: f"The sign at the {s} says {w.cjk[s]} and the {m} is {w.state[m]}.",
        lambda: f"Temperature at the {s}: {r.randint(-5, 35)} °C, {w.weather[w.site_city[s]]}, {w.emoji[m]}",
        lambda: f"{NUM_WORDS[t].capitalize()} plus {NUM_WORDS[(t + 1) % 11]} is {t + (t + 1) % 11}.",
        lambda: f"Line {line} produced {r.randint(100, 9999)} parts in {r.randint(2, 12)} hours.",
        lambda: f"A {v} from {c} arrived {w.veh_leaves[v]} with {r.randint(2, 60)} {r.choice(ITEMS)}.",
        # number-heavy lines: give the BPE enough material to fill ~4096 ids with digit merges
        lambda: (f"Invoice {r.randint(10000, 99999)} for order {r.randint(1000, 9999)} "
                 f"was paid on 2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}."),
        lambda: (f"Serial number {r.choice(LETTERS)}{r.choice(LETTERS)}-{r.randint(1000, 9999)} "
                 f"belongs to the {m} on line {line}."),
    ]
    return r.choice(templates)()


SYSTEMS = [
    "You are a helpful assistant.",
    "You are a helpful maintenance assistant for the plant.",
    "You are a friendly assistant for a small clinic.",
    "You answer questions about the branch office.",
    "You are a short and precise assistant.",
    "You help drivers plan their trips.",
]


def qa(r: random.Random, w: World) -> tuple[str, str]:
    line = r.randint(1, 9)
    m = r.choice(MACHINES)
    city = r.choice(CITIES)
    site = r.choice(SITES)
    day = r.choice(DAYS)
    part = r.choice(PARTS)
    veh = r.choice(VEHICLES)
    a, b = r.randint(1, 20), r.randint(1, 20)
    pairs = [
        (f"What is the status of the {m} on line {line}?",
         f"The {m} on line {line} is {w.state[m]}."),
        (f"Is the {m} on line {line} running?",
         f"The {m} on line {line} is {w.state[m]}."),
        (f"What is the weather in {city}?",
         f"The weather in {city} is {w.weather[city]} today."),
        (f"When does the branch office in {city} open?",
         f"The branch office in {city} opens {w.opens[city]}."),
        (f"How much does a new {part} cost?",
         f"A new {part} costs {w.price[part]}."),
        (f"Who repaired the {m}?",
         f"{w.fixer[m].capitalize()} repaired the {m} on {w.fix_day[m]}."),
        (f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."),
        (f"How many patients did the clinic see on {day}?",
         f"The clinic saw {w.patients[day]} patients on {day}."),
        ("Hello!", "Hello! How can I help you today?"),
        ("Hi!", "Hi! What can I do for you?"),
        ("Thank you.", "You are welcome. Have a nice day!"),
        (f"When is the next maintenance of the {m}?",
         f"The next maintenance of the {m} is on {w.fix_day[m]}."),
        (f"Can the {veh} leave today?",
         f"Yes, the {veh} can leave {w.veh_leaves[veh]}, but it needs a new {w.veh_part[veh]} soon."),
        (f"Where is the {site}?", f"The {site} is in {w.site_city[site]}."),
        (f"Please summarize the report for line {line}.",
         f"The {m} on line {line} was {w.action[m]} and is {w.state[m]}."),
        (f"What does the sign at the {site} say?", f"The sign at the {site} says {w.cjk[site]}. {r.choice(EMOJI)}"),
        (f"Is the café in {city} open?", f"Yes, the café in {city} is open until {w.closes[city]}:00."),
    ]
    return r.choice(pairs)


def dialogue(r: random.Random, w: World) -> list[dict]:
    msgs = []
    if r.random() < 0.8:
        msgs.append({"role": "system", "content": r.choice(SYSTEMS)})
    for _ in range(r.choice([1, 1, 1, 2])):
        q, a = qa(r, w)
        msgs.append({"role": "user", "content": q})
        msgs.append({"role": "assistant", "content": a})
    return msgs


def render_chat(msgs: list[dict]) -> str:
    """Python twin of CHAT_TEMPLATE (without the leading bos)."""
    return "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in msgs)


def build_corpus(n_text: int, n_chat: int, seed: int) -> tuple[list[str], list[str]]:
    w = World(seed + 7)
    r = random.Random(seed)
    texts = []
    for _ in range(n_text):
        k = r.choice([1, 1, 2, 3])
        texts.append(" ".join(sentence(r, w) for _ in range(k)))
    chats = [render_chat(dialogue(r, w)) for _ in range(n_chat)]
    return texts, chats


# --------------------------------------------------------------------------
# 2. tokenizer
# --------------------------------------------------------------------------
def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, bos_id)],
    )
    return tok


# --------------------------------------------------------------------------
# 3. model
# --------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".venv/build/hf-tiny")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=25.0,
                    help="safety stop; normally the fixed --steps finish first")
    args = ap.parse_args()

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    texts, chats = build_corpus(n_text=30000, n_chat=30000, seed=SEED)
    print(f"corpus: {len(texts)} texts, {len(chats)} chats, "
          f"{sum(map(len, texts)) + sum(map(len, chats))} chars")
    tok = train_tokenizer(texts + chats, vocab_size=4096)
    vocab = tok.get_vocab_size()
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    print(f"tokenizer: vocab={vocab} special={ids} ({time.time() - t0:.1f}s)")

    # ---- token stream: each document = <s> + text (+ </s> for plain text) ----
    r = random.Random(SEED + 1)
    docs = [(t, False) for t in texts] + [(c, True) for c in chats]
    r.shuffle(docs)
    stream: list[int] = []
    enc = tok.encode_batch([d for d, _ in docs], add_special_tokens=True)
    for e, (_, is_chat) in zip(enc, docs):
        stream.extend(e.ids)
        if not is_chat:
            stream.append(ids[EOS_TEXT])
    data = torch.tensor(stream, dtype=torch.long)
    print(f"training tokens: {len(data)}")

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        tie_word_embeddings=False,
        bos_token_id=ids[BOS],
        eos_token_id=[ids[END], ids[EOS_TEXT]],
        pad_token_id=ids[PAD],
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"model params: {nparams / 1e6:.2f} M")

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    warm = 50

    def lr_at(step: int) -> float:
        if step < warm:
            return args.lr * (step + 1) / warm
        p = (step - warm) / max(1, args.steps - warm)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    g = torch.Generator().manual_seed(SEED)
    model.train()
    t_train = time.time()
    step = 0
    for step in range(args.steps):
        starts = torch.randint(0, len(data) - args.seq - 1, (args.batch,), generator=g)
        x = torch.stack([data[s: s + args.seq] for s in starts.tolist()])
        for gp in opt.param_groups:
            gp["lr"] = lr_at(step)
        out_ = model(input_ids=x, labels=x)
        opt.zero_grad(set_to_none=True)
        out_.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == args.steps - 1:
            el = time.time() - t_train
            print(f"step {step:4d} loss {out_.loss.item():.3f} lr {lr_at(step):.2e} {el:.0f}s", flush=True)
        if time.time() - t_train > args.max_minutes * 60:
            print(f"WARNING: time box hit at step {step}; result is not step-deterministic")
            break
    print(f"trained {step + 1} steps in {time.time() - t_train:.0f}s")

    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS], eos_token_id=[ids[END], ids[EOS_TEXT]], pad_token_id=ids[PAD],
        do_sample=False, max_length=512,
    )
    model.save_pretrained(out, safe_serialization=True)

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS, eos_token=END, unk_token=UNK, pad_token=PAD,
        additional_special_tokens=["</s>", "<|system|>", "<|user|>", "<|assistant|>"],
        model_max_length=512,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out)
    fix_tokenizer_config(out)

    # quick sanity generation with fp32 transformers
    with torch.no_grad():
        for prompt in ["The machine on line 3", "The weather in Berlin"]:
            enc = hf_tok(prompt, return_tensors="pt")
            o = model.generate(**enc, max_new_tokens=24, do_sample=False)
            print(repr(prompt), "->", repr(hf_tok.decode(o[0][enc.input_ids.shape[1]:])))
        msgs = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is the status of the pump on line 2?"}]
        ii = hf_tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
        o = model.generate(ii, attention_mask=torch.ones_like(ii), max_new_tokens=24, do_sample=False)
        print("chat ->", repr(hf_tok.decode(o[0][ii.shape[1]:])))
    print(f"total {time.time() - t0:.0f}s")


def fix_tokenizer_config(out: Path) -> None:
    """Make tokenizer_config.json self-contained: chat_template inline, known keys."""
    p = out / "tokenizer_config.json"
    cfg = json.loads(p.read_text())
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg["bos_token"] = BOS
    cfg["eos_token"] = END
    cfg["pad_token"] = PAD
    cfg["unk_token"] = UNK
    cfg["model_max_length"] = 512
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["add_bos_token"] = True
    cfg["clean_up_tokenization_spaces"] = False
    cfg["model_input_names"] = ["input_ids", "attention_mask"]
    p.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    jinja = out / "chat_template.jinja"
    if jinja.exists():
        jinja.unlink()


if __name__ == "__main__":
    main()
