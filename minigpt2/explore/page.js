// minigpt2 explore: draws the numbers in the #data block (see page.py for how they are stored).
"use strict";

const data = JSON.parse(document.getElementById("data").textContent);

function decode(b64, Type) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Type(bytes.buffer);
}

const L = data.layers, H = data.heads, K = data.k, P = data.prompt_len;
const tokens = data.tokens;
const steps = tokens.length - P;
const T = tokens.length - 1; // positions the model read: every token but the last picked one
const candidateIds = decode(data.candidate_ids, Int32Array);
const candidateProbs = decode(data.candidate_probs, Float32Array);
const pickedProbs = decode(data.picked_probs, Float32Array);
const patterns = decode(data.patterns, Uint8Array); // [L, H, T(T+1)/2], probability * 255
const lensIds = decode(data.lens_ids, Int32Array); // [L, T]
const lensProbs = decode(data.lens_probs, Float32Array);
const attribution = decode(data.attribution, Float32Array); // [steps, pieces]
const attributionBias = decode(data.attribution_bias, Float32Array);
const pickedLogits = decode(data.picked_logits, Float32Array);
const pieces = data.labels.length;
const packed = (T * (T + 1)) / 2;

const $ = (id) => document.getElementById(id);
const text = (id) => data.strings[id] ?? "";
// A token as it reads on screen: spaces and line breaks made visible.
const shown = (id) => JSON.stringify(text(id)).slice(1, -1).replace(/ /g, "\u2423");
const short = (id) => (shown(id).length > 12 ? shown(id).slice(0, 11) + "\u2026" : shown(id)); // for labels

function element(tag, props = {}, children = []) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const child of children) e.append(child);
  return e;
}

function attention(layer, head, query, key) {
  return patterns[(layer * H + head) * packed + (query * (query + 1)) / 2 + key] / 255;
}

function headAttention(layer, head, query, key) {
  if (head >= 0) return attention(layer, head, query, key);
  let sum = 0;
  for (let h = 0; h < H; h++) sum += attention(layer, h, query, key);
  return sum / H;
}

// ---- page furniture, built once ----
$("about").textContent =
  `${data.model || "GPT-2"}: ${L} layers \u00d7 ${H} heads; ${P} prompt tokens, ${steps} generated. ` +
  "Move the slider (or the arrow keys on it) to walk through the steps.";
const slider = $("step");
slider.max = steps;
const chips = tokens.map((id, position) => {
  const chip = element("span", { className: "chip" + (position >= P ? " new" : ""), title: `position ${position}` }, [
    shown(id),
    element("small", { textContent: String(id) }),
  ]);
  if (position >= P) chip.onclick = () => setStep(position - P + 1);
  $("tokens").append(chip);
  return chip;
});
for (let l = 0; l < L; l++) $("layer").append(new Option(`layer ${l}`, l));
$("head").append(new Option("mean of heads", -1));
for (let h = 0; h < H; h++) $("head").append(new Option(`head ${h}`, h));

// ---- one step ----
function setStep(step) {
  slider.value = step;
  draw();
}

function current() {
  const step = Number(slider.value);
  return { step, i: step - 1, query: P - 2 + step, picked: tokens[P - 1 + step] };
}

function drawTokens({ i }) {
  chips.forEach((chip, position) => {
    chip.classList.toggle("current", position === P + i);
    chip.classList.toggle("ahead", position > P + i);
  });
}

function drawStep({ step, i, picked }) {
  $("step-number").textContent = `${step} of ${steps}`;
  $("picked").textContent = shown(picked);
  $("picked-prob").textContent = `(id ${picked}, p = ${pickedProbs[i].toFixed(4)})`;
  // The prompt's text, then what the loop added before this step, then this step's piece.
  const now = data.texts[i], before = i > 0 ? data.texts[i - 1] : data.prompt_text;
  const box = $("text");
  if (now.startsWith(before) && before.startsWith(data.prompt_text)) {
    box.replaceChildren(
      data.prompt_text,
      element("b", { textContent: before.slice(data.prompt_text.length) }),
      element("mark", { textContent: now.slice(before.length) }),
    );
  } else {
    box.replaceChildren(now); // a piece that changed the text before it (bytes of one character)
  }
}

function drawCandidates({ i, picked }) {
  const list = $("candidates");
  list.replaceChildren();
  const top = candidateProbs[i * K];
  const rows = [];
  for (let k = 0; k < K; k++) rows.push([candidateIds[i * K + k], candidateProbs[i * K + k]]);
  if (!rows.some(([id]) => id === picked)) rows.push([picked, pickedProbs[i]]); // a draw from further down
  for (const [id, p] of rows) {
    const fill = element("div", { className: "fill" });
    fill.style.width = `${top > 0 ? (100 * p) / top : 0}%`;
    list.append(
      element("div", { className: "bar" + (id === picked ? " picked" : ""), title: `id ${id}` }, [
        element("span", { className: "token", textContent: shown(id) }),
        element("div", {}, [fill]),
        element("span", { className: "p", textContent: p.toFixed(4) }),
      ]),
    );
  }
}

function diverging(value, limit) {
  const a = Math.min(1, Math.abs(value) / (limit || 1));
  return value >= 0 ? `rgba(26, 86, 219, ${a})` : `rgba(220, 38, 38, ${a})`;
}

function drawAttribution({ i }) {
  const row = attribution.subarray(i * pieces, (i + 1) * pieces);
  let limit = 0, total = attributionBias[i];
  for (const v of row) {
    limit = Math.max(limit, Math.abs(v));
    total += v;
  }
  $("attribution-sum").textContent =
    `embed ${row[0].toFixed(2)}, pos_embed ${row[1].toFixed(2)}, ln_final bias ${attributionBias[i].toFixed(2)}; ` +
    `all pieces add up to ${total.toFixed(3)}, the model's logit ${pickedLogits[i].toFixed(3)}`;
  const table = $("attribution");
  table.replaceChildren();
  const head = [element("th")];
  for (let h = 0; h < H; h++) head.push(element("th", { textContent: `H${h}` }));
  head.push(element("th", { textContent: "bias" }), element("th", { textContent: "MLP" }));
  table.append(element("tr", {}, head));
  for (let l = 0; l < L; l++) {
    const cells = [element("th", { textContent: `L${l}` })];
    for (let j = 0; j < H + 2; j++) {
      const index = 2 + l * (H + 2) + j;
      const cell = element("td", { title: `${data.labels[index]}: ${row[index].toFixed(4)}` });
      cell.style.background = diverging(row[index], limit);
      cells.push(cell);
    }
    table.append(element("tr", {}, cells));
  }
}

function drawHeatmap({ query }) {
  const layer = Number($("layer").value), head = Number($("head").value);
  const n = query + 1;
  const canvas = $("heatmap");
  const context = canvas.getContext("2d");
  const cell = Math.max(6, Math.min(24, Math.floor(560 / n)));
  context.font = "11px monospace";
  let label = 0;
  for (let t = 0; t < n; t++) label = Math.max(label, context.measureText(`${t} ${short(tokens[t])}`).width);
  label = Math.min(label + 8, 160);
  canvas.width = label + n * cell + 2;
  canvas.height = label + n * cell + 2;
  context.font = "11px monospace";
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  for (let q = 0; q < n; q++) {
    for (let k = 0; k <= q; k++) {
      const a = headAttention(layer, head, q, k);
      context.fillStyle = `rgb(${255 - 229 * a}, ${255 - 169 * a}, ${255 - 36 * a})`;
      context.fillRect(label + k * cell, label + q * cell, cell, cell);
    }
  }
  context.strokeStyle = "#e11d48";
  context.lineWidth = 2;
  context.strokeRect(label, label + query * cell, n * cell, cell);
  context.fillStyle = "#333";
  context.textBaseline = "middle";
  for (let t = 0; t < n; t++) {
    const name = `${t} ${short(tokens[t])}`;
    context.textAlign = "right";
    context.fillText(name, label - 4, label + (t + 0.5) * cell, label - 6); // queries, down the left
    context.save();
    context.translate(label + (t + 0.5) * cell, label - 4);
    context.rotate(-Math.PI / 2);
    context.textAlign = "left";
    context.fillText(name, 0, 0, label - 6); // keys, along the top
    context.restore();
  }
  canvas.onmousemove = (event) => {
    const box = canvas.getBoundingClientRect();
    const k = Math.floor((event.clientX - box.left - label) / cell);
    const q = Math.floor((event.clientY - box.top - label) / cell);
    $("cell").textContent =
      q >= 0 && q < n && k >= 0 && k <= q
        ? `Query ${q} ${shown(tokens[q])} \u2192 key ${k} ${shown(tokens[k])}: ${headAttention(layer, head, q, k).toFixed(3)}`
        : "";
  };
}

function drawLens({ query }) {
  const table = $("lens");
  table.replaceChildren();
  const head = [element("th", { textContent: "input \u2192" })];
  for (let t = 0; t <= query; t++) head.push(element("th", { textContent: short(tokens[t]), title: `position ${t}: ${shown(tokens[t])}` }));
  table.append(element("tr", {}, head));
  for (let l = 0; l < L; l++) {
    const cells = [element("th", { textContent: `after L${l}` })];
    for (let t = 0; t <= query; t++) {
      const id = lensIds[l * T + t], p = lensProbs[l * T + t];
      const cell = element("td", { textContent: short(id), title: `after block ${l}, position ${t}: ${shown(id)} (id ${id}) p = ${p.toFixed(4)}` });
      cell.style.background = `rgba(26, 86, 219, ${0.08 + 0.6 * p})`;
      if (t === query) cell.className = "current";
      cells.push(cell);
    }
    table.append(element("tr", {}, cells));
  }
}

const sae = data.sae && { ...data.sae, ids: decode(data.sae.ids, Int32Array), values: decode(data.sae.values, Float32Array) };
if (sae) {
  $("sae").hidden = false;
  $("sae-hook").textContent = sae.hook;
}

function drawSae({ query }) {
  const rows = [];
  for (let k = 0; k < sae.k; k++) rows.push([sae.ids[query * sae.k + k], sae.values[query * sae.k + k]]);
  const top = rows[0][1];
  $("sae-features").replaceChildren(
    ...rows.map(([id, value]) => {
      const fill = element("div", { className: "fill" });
      fill.style.width = `${top > 0 ? (100 * value) / top : 0}%`;
      return element("div", { className: "bar" }, [
        element("span", { className: "token", textContent: `feature ${id}` }),
        element("div", {}, [fill]),
        element("span", { className: "p", textContent: value.toFixed(3) }),
      ]);
    }),
  );
}

function draw() {
  const now = current();
  drawTokens(now);
  drawStep(now);
  drawCandidates(now);
  drawAttribution(now);
  drawHeatmap(now);
  drawLens(now);
  if (sae) drawSae(now);
}

slider.oninput = draw;
$("layer").onchange = () => drawHeatmap(current());
$("head").onchange = () => drawHeatmap(current());
draw();
