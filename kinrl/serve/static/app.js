// kinrl serve: the page. Plain JavaScript, no build step. Every name and text from the server
// is set with textContent (or as an SVG text node), never parsed as HTML.
"use strict";

const state = { config: null, puzzle: null, battle: null, voted: false, busy: false };
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function status(message, isError) {
  const line = $("status");
  line.textContent = message || "";
  line.classList.toggle("error", Boolean(isError));
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const why = data && typeof data.error === "string" ? data.error : response.statusText;
    throw new Error(`${response.status}: ${why}`);
  }
  return data;
}

async function guarded(work) {
  if (state.busy) return;
  state.busy = true;
  document.body.classList.add("busy");
  try {
    await work();
  } catch (error) {
    status(error.message, true);
  } finally {
    state.busy = false;
    document.body.classList.remove("busy");
  }
}

// --- annotator and guidelines -------------------------------------------------------------

function annotator() { return localStorage.getItem("kinrl.annotator") || ""; }

function showAnnotator() { $("annotator-name").textContent = annotator() || "(none)"; }

function askName() {
  return new Promise((resolve) => {
    const dialog = $("name-dialog");
    $("name-input").value = annotator();
    dialog.addEventListener("close", () => {
      const name = $("name-input").value.trim();
      if (name) localStorage.setItem("kinrl.annotator", name.slice(0, 64));
      showAnnotator();
      resolve(annotator());
    }, { once: true });
    dialog.showModal();
  });
}

async function requireName() { return annotator() || askName(); }

// --- tabs --------------------------------------------------------------------------------

function showTab(name) {
  for (const button of document.querySelectorAll("nav.tabs button")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  }
  for (const section of document.querySelectorAll("section.tab")) {
    section.hidden = section.dataset.tab !== name;
  }
  document.body.dataset.tab = name;
  if (name === "leaderboard") guarded(loadBoard);
  if (name === "arena" && !annotator()) askName();
}

function currentTab() { return document.body.dataset.tab || "explore"; }

// --- puzzles -----------------------------------------------------------------------------

function setupForm(config) {
  const difficulty = $("difficulty");
  for (const level of Object.keys(config.levels)) {
    const option = el("option", `level ${level}`);
    option.value = level;
    difficulty.append(option);
  }
  difficulty.value = "1";
  const knobs = $("knobs");
  for (const knob of config.knobs) {
    const label = el("label", null, "knob");
    label.title = knob.help;
    label.append(el("span", knob.name.replaceAll("_", " ")));
    const input = document.createElement("input");
    input.dataset.knob = knob.name;
    input.dataset.type = knob.type;
    if (knob.type === "bool") {
      const select = document.createElement("select");
      for (const v of ["", "true", "false"]) {
        const option = el("option", v || "(preset)");
        option.value = v;
        select.append(option);
      }
      select.dataset.knob = knob.name;
      select.dataset.type = knob.type;
      label.append(select);
    } else {
      input.type = knob.type === "int" || knob.type === "float" ? "number" : "text";
      if (knob.type === "float") input.step = "any";
      input.placeholder = "(preset)";
      label.append(input);
    }
    label.append(el("small", knob.help));
    knobs.append(label);
  }
  updatePresets();
  const split = $("split");
  const source = $("source");
  if (config.data) {
    for (const [name, count] of Object.entries(config.data.splits)) {
      const option = el("option", `${name} (${count})`);
      option.value = name;
      split.append(option);
    }
    if ("test" in config.data.splits) split.value = "test";
  } else {
    source.querySelector('option[value="data"]').disabled = true;
  }
  source.addEventListener("change", () => {
    const data = source.value === "data";
    for (const node of document.querySelectorAll(".gen")) node.hidden = data;
    for (const node of document.querySelectorAll(".dat")) node.hidden = !data;
  });
  difficulty.addEventListener("change", updatePresets);
}

function updatePresets() {
  const preset = state.config.levels[$("difficulty").value] || {};
  for (const input of document.querySelectorAll("#knobs [data-knob]")) {
    const value = preset[input.dataset.knob];
    if (input.tagName === "SELECT") {
      input.options[0].textContent = `(preset: ${value})`;
    } else {
      input.placeholder = Array.isArray(value) ? value.join(",") || "(none)" : String(value);
    }
  }
}

function knobValues() {
  const knobs = {};
  for (const input of document.querySelectorAll("#knobs [data-knob]")) {
    const raw = input.value.trim();
    if (!raw) continue;
    const type = input.dataset.type;
    let value;
    if (type === "bool") value = raw === "true";
    else if (type === "int") value = Number.parseInt(raw, 10);
    else if (type === "float") value = Number(raw);
    else if (type.startsWith("float[")) value = raw.split(",").map((x) => Number(x.trim()));
    else if (type === "str[]") value = raw.split(",").map((x) => x.trim()).filter(Boolean);
    else value = raw;
    knobs[input.dataset.knob] = value;
  }
  return knobs;
}

async function newPuzzle() {
  const source = $("source").value;
  const index = $("index").value.trim();
  const body = { source };
  if (index) body.index = Number.parseInt(index, 10);
  if (source === "data") {
    body.split = $("split").value;
  } else {
    body.difficulty = Number.parseInt($("difficulty").value, 10);
    body.seed = Number.parseInt($("seed").value || "0", 10);
    body.knobs = knobValues();
  }
  const puzzle = await api("/api/puzzles", body);
  showPuzzle(puzzle);
  status(`puzzle ${puzzle.puzzle_id}`);
  return puzzle;
}

function showPuzzle(puzzle) {
  state.puzzle = puzzle;
  const record = puzzle.record;
  $("puzzle").hidden = false;
  $("description").textContent = record.description || "";
  $("question").textContent = record.question || record.prompt || "";
  $("answer").textContent = record.answer || "";
  $("answer-box").open = false;
  const s = puzzle.source;
  const where = s.kind === "data"
    ? `--data ${s.split} #${s.index}`
    : `level ${s.difficulty}, seed ${s.seed}, index ${s.index}`;
  $("puzzle-meta").textContent =
    `${where} · ${record.question_type || "?"} question · ${record.hops ?? "?"} hops · ` +
    `${(record.people || []).length} people`;
  drawTree(puzzle.tree, record);
  $("answers").replaceChildren();
}

function drawTree(layout, record) {
  const box = $("tree");
  box.replaceChildren();
  const dx = 112, dy = 92, pad = 60;
  const width = Math.max(layout.width * dx + pad * 2 - dx, 200);
  const height = Math.max((layout.height - 1) * dy + pad * 2, 120);
  box.setAttribute("viewBox", `0 0 ${width} ${height}`);
  box.style.aspectRatio = `${width} / ${height}`;
  const at = {};
  for (const node of layout.nodes) at[node.name] = [pad + node.x * dx, pad + node.y * dy];
  const query = record.query || {};
  const queried = new Set([query.subject, query.object].filter(Boolean));
  const edges = svg("g", { class: "edges" });
  for (const [a, b] of layout.spouses) {
    const [x1, y1] = at[a], [x2, y2] = at[b];
    edges.append(svg("line", { x1, y1, x2, y2, class: "spouse" }));
  }
  for (const [parent, child] of layout.parents) {
    const [x1, y1] = at[parent], [x2, y2] = at[child];
    const mid = (y1 + y2) / 2;
    edges.append(svg("path", { d: `M${x1},${y1 + 14} V${mid} H${x2} V${y2 - 14}`, class: "parent" }));
  }
  box.append(edges);
  for (const node of layout.nodes) {
    const [x, y] = at[node.name];
    const classes = ["person", node.gender === "female" ? "female" : "male"];
    if (node.mentioned) classes.push("mentioned");
    if (queried.has(node.name)) classes.push("queried");
    const g = svg("g", { class: classes.join(" "), transform: `translate(${x},${y})` });
    g.append(svg("title", {}, `${node.name} (${node.gender})`));
    if (node.gender === "female") g.append(svg("circle", { r: 13 }));
    else g.append(svg("rect", { x: -12, y: -12, width: 24, height: 24, rx: 3 }));
    g.append(svg("text", { y: 30, "text-anchor": "middle" }, node.name));
    box.append(g);
  }
}

// --- explore: one or two runs' answers ---------------------------------------------------

function setupRuns(config) {
  const names = config.runs.map((run) => run.name);
  for (const [id, withNone] of [["run-1", false], ["run-2", true]]) {
    const select = $(id);
    if (withNone) {
      const none = el("option", "(none)");
      none.value = "";
      select.append(none);
    }
    for (const name of names) {
      const option = el("option", name);
      option.value = name;
      select.append(option);
    }
  }
  if (names.length > 1) $("run-2").value = names[1];
  if (!names.length) $("ask").disabled = true;
}

function completionItem(completion, label) {
  const item = el("li", null, completion.correct ? "right" : "wrong");
  const head = el("div", null, "mark");
  head.append(el("span", completion.correct ? "✓ right" : "✗ wrong", "verdict"));
  head.append(el("span", `${label} · gold reward ${completion.reward.toFixed(2)}`, "reward"));
  item.append(head, el("pre", completion.text, "completion"));
  return item;
}

async function ask() {
  const puzzle = state.puzzle || (await newPuzzle());
  const runs = [$("run-1").value, $("run-2").value].filter(Boolean);
  const samples = Math.max(0, Math.min(16, Number.parseInt($("samples").value || "0", 10)));
  const temperature = Number($("temperature").value || "1");
  const columns = $("answers");
  columns.replaceChildren();
  for (const run of runs) {
    const column = el("div", null, "card");
    column.append(el("h3", run));
    const list = el("ul", null, "completions");
    column.append(list);
    columns.append(column);
    const greedy = await api("/api/completions", { run, puzzle_id: puzzle.puzzle_id, n: 1 });
    list.append(completionItem(greedy.completions[0], "greedy"));
    if (samples > 0) {
      const sampled = await api("/api/completions", {
        run, puzzle_id: puzzle.puzzle_id, n: samples, temperature,
        seed: Math.floor(Math.random() * 2 ** 31),
      });
      sampled.completions.forEach((c, i) => list.append(completionItem(c, `sample ${i + 1}, T=${temperature}`)));
    }
    const right = list.querySelectorAll("li.right").length;
    column.querySelector("h3").append(el("small", ` ${right}/${list.children.length} right`));
  }
  status(`asked ${runs.join(" and ")}`);
}

// --- arena -------------------------------------------------------------------------------

async function newBattle() {
  if (!$("same-puzzle").checked || !state.puzzle) await newPuzzle();
  const temperature = Number($("battle-temperature").value || "0");
  const battle = await api("/api/battles", { puzzle_id: state.puzzle.puzzle_id, temperature });
  state.battle = battle;
  state.voted = false;
  $("battle").hidden = false;
  $("text-a").textContent = battle.a.text;
  $("text-b").textContent = battle.b.text;
  for (const side of ["a", "b"]) {
    $(`reveal-${side}`).textContent = "";
    $(`side-${side}`).className = "card";
  }
  $("rationale").value = "";
  $("vote-result").textContent = "";
  setVoting(true);
  status("new battle: which answer is better?");
}

function setVoting(on) {
  for (const button of document.querySelectorAll(".votes button")) button.disabled = !on;
}

async function vote(choice) {
  if (!state.battle || state.voted) return;
  const name = await requireName();
  if (!name) { status("a vote needs an annotator name", true); return; }
  const result = await api("/api/votes", {
    battle_id: state.battle.battle_id, choice, annotator: name,
    rationale: $("rationale").value.trim(),
  });
  state.voted = true;
  setVoting(false);
  for (const side of ["a", "b"]) {
    const reward = result.rewards[side];
    $(`reveal-${side}`).textContent =
      `${result.runs[side]} · gold reward ${reward.toFixed(2)} · ${reward === 1 ? "right" : "wrong"}`;
    $(`side-${side}`).className = `card ${reward === 1 ? "right" : "wrong"}${choice === side ? " chosen" : ""}`;
  }
  const agree = result.gold_agrees === null ? "the gold reward ties them"
    : result.gold_agrees ? "you agree with the gold reward" : "the gold reward disagrees";
  $("vote-result").textContent = `vote ${result.id} stored (${choice.replace("_", " ")}); ${agree}. Press N for the next battle.`;
  status(`voted ${choice}`);
}

async function skip() {
  if (!state.battle || state.voted) return;
  const name = await requireName();
  if (name) await api(`/api/battles/${encodeURIComponent(state.battle.battle_id)}/skip`, { annotator: name });
  await newBattle();
}

// --- leaderboard -------------------------------------------------------------------------

function cells(row, values) {
  for (const value of values) row.append(el("td", value === null || value === undefined ? "–" : value));
}

const percent = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);

async function loadBoard() {
  const board = await api("/api/leaderboard");
  const runs = $("board-runs").querySelector("tbody");
  runs.replaceChildren();
  for (const r of board.runs) {
    const row = el("tr");
    cells(row, [r.name, r.rating, r.rating === null ? null : `${r.low} – ${r.high}`, r.votes,
      r.wins, r.losses, r.ties, r.both_bad, percent(r.gold_accuracy)]);
    runs.append(row);
  }
  const people = $("board-annotators").querySelector("tbody");
  people.replaceChildren();
  for (const a of board.annotators) {
    const row = el("tr");
    const c = a.choices;
    cells(row, [a.annotator, a.votes, `${c.a} / ${c.b} / ${c.tie} / ${c.both_bad}`,
      percent(a.gold_agreement), a.gold_comparable, percent(a.consistent)]);
    people.append(row);
  }
  $("board-meta").textContent = `${board.votes} votes, ${board.rounds} bootstrap rounds`;
}

// --- keys and start-up -------------------------------------------------------------------

const KEYS = { 1: "a", a: "a", 2: "b", b: "b", 3: "tie", t: "tie", 4: "both_bad", x: "both_bad" };

function onKey(event) {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target && ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName)) return;
  if ($("name-dialog").open || currentTab() !== "arena") return;
  const key = event.key.toLowerCase();
  if (KEYS[key]) { event.preventDefault(); guarded(() => vote(KEYS[key])); }
  else if (key === "s") { event.preventDefault(); guarded(skip); }
  else if (key === "n") { event.preventDefault(); guarded(newBattle); }
}

async function start() {
  const config = await api("/api/config");
  state.config = config;
  $("guidelines-text").textContent = config.guidelines;
  setupForm(config);
  setupRuns(config);
  showAnnotator();
  for (const button of document.querySelectorAll("nav.tabs button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("puzzle-form").addEventListener("submit", (event) => { event.preventDefault(); guarded(newPuzzle); });
  $("ask").addEventListener("click", () => guarded(ask));
  $("new-battle").addEventListener("click", () => guarded(newBattle));
  $("skip").addEventListener("click", () => guarded(skip));
  $("refresh-board").addEventListener("click", () => guarded(loadBoard));
  $("change-name").addEventListener("click", askName);
  $("guidelines-toggle").addEventListener("click", () => {
    const box = $("guidelines");
    box.hidden = !box.hidden;
    $("guidelines-toggle").setAttribute("aria-expanded", String(!box.hidden));
  });
  for (const button of document.querySelectorAll(".votes button[data-choice]")) {
    button.addEventListener("click", () => guarded(() => vote(button.dataset.choice)));
  }
  document.addEventListener("keydown", onKey);
  document.body.dataset.tab = "explore";
  document.body.dataset.ready = "true";
  const runs = config.runs.map((r) => r.name).join(", ") || "none";
  status(`ready · runs: ${runs}`);
}

document.addEventListener("DOMContentLoaded", () => guarded(start));
