// Synced grid player: every cell of the grid shows its frame at one shared step.
// One file for both front ends: the Panel app calls `render` (frames are <img> URLs on the
// server's static route) and the static export calls `mount` (frames are sprite sheets).

const SPEEDS = [1, 2, 5, 10, 15, 25, 40];
const EAGER = 64;  // cells whose frames all preload at once; a larger grid preloads what is seen
const SIZES = ["fit", "64", "96", "128", "192", "256", "384", "512", "actual"];
const COMPARE = { side: "side by side", flicker: "A/B flicker", slider: "A/B slider", diff: "|A − B|" };
const FLICKER_MS = 600;
const MIN_TILE = 40;
// Inputs where keys type text: the player's shortcuts leave them alone.
const TEXT_INPUTS = new Set(["text", "search", "email", "url", "tel", "password", "number",
  "date", "datetime-local", "month", "time", "week"]);
// The difference view's colour scale (inferno, dark to bright) and the |A − B| at its top: the
// per-pixel mean of |R|, |G| and |B| differences, 0 to 255.
const HEAT = ["#000004", "#1f0c48", "#550f6d", "#88226a", "#ba3655", "#e35933", "#f98e09", "#f8c931", "#fcffa4"];
const DIFF_SCALE = 128;
const SVG = "http://www.w3.org/2000/svg";
let players = 0;  // each player on a page has its own filter id
// Icons as SVG paths (a font glyph such as ⏸ is an empty box where the font lacks it).
const ICONS = {
  play: "M4 2 L14 8 L4 14 Z",
  pause: "M3 2 H7 V14 H3 Z M9 2 H13 V14 H9 Z",
  prev: "M12 2 L4 8 L12 14 Z M2 2 H4 V14 H2 Z",
  next: "M4 2 L12 8 L4 14 Z M12 2 H14 V14 H12 Z",
};

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// An SVG element with attributes.
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

function icon(name) {
  return svg("svg", { viewBox: "0 0 16 16", class: `dp-icon dp-icon-${name}`, "aria-hidden": "true" },
    svg("path", { d: ICONS[name] }));
}

// A number to `digits` decimals, "–" where unknown.
const fixed = (value, digits) => (value == null || Number.isNaN(value) ? "–" : value.toFixed(digits));

// "0.29 s/step · 2.1 min": a run's runtime, where its metrics say.
function runtime(cell) {
  const wall = cell.wall_time_s;
  const parts = [cell.seconds_per_step == null ? "" : `${fixed(cell.seconds_per_step, 2)} s/step`,
    wall == null ? "" : wall < 120 ? `${fixed(wall, 0)} s` : `${fixed(wall / 60, 1)} min`];
  return parts.filter(Boolean).join(" · ");
}

// The SVG filter that turns a per-channel difference image into the heat map: the mean of R, G
// and B, scaled so DIFF_SCALE is the top, through HEAT.
function heatFilter(id) {
  const g = (255 / DIFF_SCALE / 3).toFixed(5);
  const row = `${g} ${g} ${g} 0 0`;
  const table = (i) => HEAT.map((c) => (parseInt(c.slice(1 + 2 * i, 3 + 2 * i), 16) / 255).toFixed(3)).join(" ");
  return svg("svg", { class: "dp-defs", width: 0, height: 0, "aria-hidden": "true" },
    svg("filter", { id, "color-interpolation-filters": "sRGB" },
      svg("feColorMatrix", { type: "matrix", values: `${row} ${row} ${row} 0 0 0 0 1` }),
      svg("feComponentTransfer", {}, ...["R", "G", "B"].map((c, i) => svg(`feFunc${c}`, { type: "table", tableValues: table(i) })))));
}

// The earth mover's distance between two palettes ([{lab: [L, a, b], weight}], weights taken as
// shares), ΔE*ab as ground distance: the least-cost transport of one onto the other, by
// successive shortest paths (palettes hold a few colours).
export function paletteDistance(pa, pb) {
  const EPS = 1e-12;
  const share = (p) => { const sum = p.reduce((t, c) => t + c.weight, 0); return p.map((c) => c.weight / sum); };
  const supply = share(pa), demand = share(pb), n = pa.length, m = pb.length;
  const cost = pa.map((x) => pb.map((y) => Math.hypot(...x.lab.map((v, i) => v - y.lab[i]))));
  const flow = pa.map(() => pb.map(() => 0));
  for (let moved = 0; moved < 1 - 1e-9;) {
    const dist = [...supply.map((s) => (s > EPS ? 0 : Infinity)), ...demand.map(() => Infinity)];
    const prev = Array(n + m).fill(-1);
    for (let round = 0, changed = true; changed && round < n + m; round++) {  // Bellman-Ford on the residual graph
      changed = false;
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < m; j++) {
          if (dist[i] + cost[i][j] < dist[n + j] - EPS) [dist[n + j], prev[n + j], changed] = [dist[i] + cost[i][j], i, true];
          if (flow[i][j] > EPS && dist[n + j] - cost[i][j] < dist[i] - EPS) [dist[i], prev[i], changed] = [dist[n + j] - cost[i][j], n + j, true];
        }
      }
    }
    let end = -1;
    for (let j = n; j < n + m; j++) if (demand[j - n] > EPS && dist[j] < Infinity && (end < 0 || dist[j] < dist[end])) end = j;
    if (end < 0) break;
    const path = [end];
    while (prev[path[0]] !== -1 && path.length <= n + m) path.unshift(prev[path[0]]);
    let amount = Math.min(supply[path[0]], demand[end - n]);
    for (let k = 1; k < path.length; k++) if (path[k] < n) amount = Math.min(amount, flow[path[k]][path[k - 1] - n]);
    for (let k = 1; k < path.length; k++) {
      if (path[k] >= n) flow[path[k - 1]][path[k] - n] += amount;
      else flow[path[k]][path[k - 1] - n] -= amount;
    }
    supply[path[0]] -= amount;
    demand[end - n] -= amount;
    moved += amount;
  }
  return flow.reduce((t, row, i) => t + row.reduce((u, f, j) => u + f * cost[i][j], 0), 0);
}

// The RMS difference of two log10 spectra over the frequencies both have.
export function spectrumDistance(a, b) {
  const both = a.map((v, i) => [v, b[i]]).filter(([x, y]) => x != null && y != null);
  return both.length ? Math.sqrt(both.reduce((t, [x, y]) => t + (x - y) ** 2, 0) / both.length) : null;
}

// A line of log power against frequency.
function sparkline(values) {
  const known = values.map((v, i) => [i, v]).filter(([, v]) => v != null);
  const lo = Math.min(...known.map(([, v]) => v)), hi = Math.max(...known.map(([, v]) => v));
  const points = known.map(([i, v]) => `${(60 * i) / Math.max(values.length - 1, 1)},${hi > lo ? 13 - (12 * (v - lo)) / (hi - lo) : 7}`);
  return svg("svg", { class: "dp-spark", viewBox: "0 0 60 14", preserveAspectRatio: "none", "aria-hidden": "true" },
    svg("polyline", { points: points.join(" ") }));
}

// A level's fingerprint card: palette swatch, spectrum sparkline, grid artifact, seconds per step
// (`named`: its experiment too, where several have the level).
function card(c, named) {
  const swatch = h("span", { class: "dp-swatch" }, ...c.palette.map(([colour, weight]) => {
    const part = h("i", {});
    part.style.flex = String(weight);
    part.style.background = colour;
    return part;
  }));
  const numbers = [c.grid == null ? "" : `grid ${fixed(c.grid, 2)}`,
    c.seconds_per_step == null ? "" : `${fixed(c.seconds_per_step, 2)} s/step`].filter(Boolean).join(" · ");
  const title = [named ? c.experiment : "", `${c.runs} run(s), final frames`,
    `palette: ${c.palette.map(([colour, w]) => `${colour} ${Math.round(100 * w)} %`).join(", ")}`,
    `spectral slope ${fixed(c.slope, 2)}`, `grid artifact ${fixed(c.grid, 3)} (1: no code grid shows)`,
    `${fixed(c.seconds_per_step, 3)} s per step, wall time ${fixed(c.wall_time_s, 0)} s`].filter(Boolean).join("\n");
  return h("div", { class: "dp-card", title }, named ? h("span", { class: "dp-card-exp" }, c.experiment) : "",
    swatch, sparkline(c.spectrum), h("span", { class: "dp-card-nums" }, numbers));
}

// A <select> of [value, text] options calling onchange(value).
function select(cls, options, onchange) {
  const el = h("select", { class: cls, onchange: () => onchange(el.value) },
    ...options.map(([value, text]) => h("option", { value }, text)));
  return el;
}

// `control` with its visible label before it (clicking the label focuses the control); its
// accessible name is the label alone (a <label> around a <select> would add the chosen option).
function labelled(text, control) {
  control.setAttribute("aria-label", text);
  return h("label", { class: "dp-field" }, h("span", {}, text), control);
}

// Whether a key pressed with this element focused types text (the shortcuts then stay off).
function typing(target) {
  if (!target) return false;
  if (target.isContentEditable || target.tagName === "TEXTAREA") return true;
  return target.tagName === "INPUT" && TEXT_INPUTS.has((target.type || "text").toLowerCase());
}

// The sprite sheet holding frame k of a cell, and where in it the frame lies.
function spriteAt(cell, k) {
  const { sheets, per, gutter } = cell.sprite;
  const sheet = sheets[Math.min(Math.floor(k / per), sheets.length - 1)];
  const j = k % per;
  return { sheet, x: (j % sheet.cols) * (cell.width + 2 * gutter) + gutter,
    y: Math.floor(j / sheet.cols) * (cell.height + 2 * gutter) + gutter };
}

// The URL holding frame k of a cell.
const urlOf = (cell, k) => (cell.sprite ? spriteAt(cell, k).sheet.url : cell.frames[k]);

// A cell's picture: an <img> whose src is swapped, or a window onto its sprite sheet. The
// sheet's frames are padded with their own edge pixels, so a scaled window never shows a
// neighbour.
function picture(cell) {
  if (cell.sprite) {
    const el = h("div", { class: "dp-frame dp-sheet", role: "img", "aria-label": cell.title });
    el.style.aspectRatio = `${cell.width} / ${cell.height}`;
    const { gutter } = cell.sprite;
    let url = null;
    return {
      el,
      show(k) {
        const { sheet, x, y } = spriteAt(cell, k);
        const sw = sheet.cols * (cell.width + 2 * gutter), sh = sheet.rows * (cell.height + 2 * gutter);
        if (url !== sheet.url) {
          url = sheet.url;
          el.style.backgroundImage = `url("${url}")`;
          el.style.backgroundSize = `${(100 * sw) / cell.width}% ${(100 * sh) / cell.height}%`;
        }
        const pct = (at, whole, part) => (whole > part ? (100 * at) / (whole - part) : 0);
        el.style.backgroundPosition = `${pct(x, sw, cell.width)}% ${pct(y, sh, cell.height)}%`;
      },
    };
  }
  const el = h("img", {
    class: "dp-frame", alt: cell.title, width: cell.width, height: cell.height, draggable: "false",
    loading: "lazy",  // a tile off-screen fetches its frame when scrolled to
  });
  return {
    el,
    show(k) {
      if (el.getAttribute("src") !== cell.frames[k]) el.src = cell.frames[k];
    },
  };
}

// Loads every frame once, in playing order, and keeps it decoded.
class Preloader {
  constructor() {
    this.images = new Map();
  }

  // Every frame of `cells`, those at and after position `index` of the grid's steps first.
  load(cells, index) {
    const longest = Math.max(0, ...cells.map((c) => c.steps.length));
    for (let d = 0; d < longest; d++) {
      for (const cell of cells) {
        const k = (index + d) % longest;
        if (k < cell.steps.length) this.fetch(urlOf(cell, k));
      }
    }
  }

  fetch(url) {
    if (this.images.has(url)) return this.images.get(url);
    const image = new Image();
    image.decoding = "async";
    image.src = url;
    image.decode().catch(() => {});
    this.images.set(url, image);
    return image;
  }

  ready(url) {
    const image = this.images.get(url);
    return !image || image.complete;
  }

  get pending() {
    let n = 0;
    for (const image of this.images.values()) n += image.complete ? 0 : 1;
    return n;
  }
}

export class GridPlayer {
  // options: hooks {onStep, onSelect, onBaseline}, compact (fit a docs column), fitHeight
  // (in "fit" size, also fit the grid into the window's height), scoped (a page shared with
  // other things, such as a notebook: keys act only while the focus is inside the player).
  constructor(root, options = {}) {
    this.hooks = options.hooks || {};
    this.fitHeight = options.fitHeight ?? true;
    this.scoped = options.scoped ?? false;
    this.grid = { rows: [], cols: [], steps: [], cells: [] };
    this.cells = new Map();
    this.tiles = [];
    this.bigs = [];
    this.index = 0;  // the position of the step shown in grid.steps
    this.dir = 1;
    this.fps = 10;
    this.mode = "loop";
    this.size = "fit";
    this.compare = "side";
    this.playing = false;
    this.selected = null;
    this.baseline = null;
    this.prints = {};
    this.preloader = new Preloader();
    this.tick = this.tick.bind(this);
    // In a grid of more than EAGER cells, a tile's frames are preloaded once it nears the view.
    this.seen = new Set();
    this.watcher = new IntersectionObserver((entries) => this.onSeen(entries), { rootMargin: "200px" });

    this.playButton = h("button", { class: "dp-play", title: "play / pause (space)", "aria-label": "play", onclick: () => this.toggle() }, icon("play"));
    const stepButton = (delta, name) =>
      h("button", { class: "dp-nudge", title: delta < 0 ? "previous step (←)" : "next step (→)", "aria-label": name, onclick: () => this.nudge(delta) }, icon(name));
    this.slider = h("input", { class: "dp-slider", type: "range", min: 0, max: 0, value: 0, "aria-label": "step", oninput: () => this.seek(+this.slider.value) });
    this.label = h("span", { class: "dp-step" });
    this.speed = select("dp-speed", SPEEDS.map((f) => [f, `${f} fps`]), (v) => (this.fps = +v));
    this.speed.value = String(this.fps);
    this.modeSelect = select("dp-mode", [["loop", "loop"], ["reflect", "reflect"]], (v) => (this.mode = v));
    this.sizeSelect = select("dp-size", SIZES.map((s) =>
      [s, s === "fit" ? "fit" : s === "actual" ? "actual pixels" : `${s} px`]), (v) => this.setSize(v));
    this.context = h("div", { class: "dp-context" });
    this.gridEl = h("div", { class: "dp-grid" });
    this.panel = this.makePanel();
    this.el = h("div", { class: "dp-player" + (options.compact ? " dp-compact" : "") },
      h("div", { class: "dp-controls" }, this.playButton, stepButton(-1, "prev"), stepButton(1, "next"),
        this.slider, this.label, labelled("speed", this.speed), labelled("at the end", this.modeSelect),
        labelled("tile size", this.sizeSelect)),
      this.context, h("div", { class: "dp-scroller" }, this.gridEl), this.panel);
    if (this.scoped) this.el.tabIndex = 0;  // a click inside gives the player the focus
    root.append(this.el);

    this.onKey = (event) => this.key(event);
    this.onKeyUp = (event) => {  // a focused button or checkbox acts on Space's keyup
      if (event.key === " " && !typing(event.composedPath()[0])) event.preventDefault();
    };
    window.addEventListener("keydown", this.onKey, true);
    window.addEventListener("keyup", this.onKeyUp, true);
    this.width = 0;
    this.resizer = new ResizeObserver(() => {
      if (this.el.clientWidth !== this.width) this.fit();
    });
    this.resizer.observe(this.el);
    this.onResize = () => this.fit();
    window.addEventListener("resize", this.onResize);
  }

  // Space, ←/→, Home/End and Esc, whatever has focus (scoped: whatever inside the player),
  // except where keys type text.
  key(event) {
    const target = event.composedPath()[0];
    if (event.ctrlKey || event.metaKey || event.altKey || typing(target)) return;
    if (this.scoped && !this.el.contains(target)) return;
    const n = this.grid.steps.length;
    if (event.key === " ") {
      if (!event.repeat) this.toggle();
    } else if (event.key === "ArrowLeft" || event.key === "ArrowRight") this.nudge(event.key === "ArrowLeft" ? -1 : 1);
    else if (event.key === "Home") this.jump(0);
    else if (event.key === "End") this.jump(n - 1);
    else if (event.key === "Escape" && this.selected) this.setSelected(null, true);
    else return;
    event.preventDefault();
    event.stopPropagation();
  }

  destroy() {
    this.pause();
    clearInterval(this.flicker);
    window.removeEventListener("keydown", this.onKey, true);
    window.removeEventListener("keyup", this.onKeyUp, true);
    window.removeEventListener("resize", this.onResize);
    this.resizer.disconnect();
    this.watcher.disconnect();
    this.el.remove();
  }

  // Show `grid` at `step` (steps done; default: the step shown now, so a grid that gains steps
  // stays where it is).
  setGrid(grid, step = this.grid.steps[this.index]) {
    this.grid = grid;
    this.index = this.indexOf(step);
    this.cells = new Map(grid.cells.map((c) => [c.id, c]));
    this.perSlot = Math.max(1, ...this.slotCounts(grid).values());
    this.gridEl.style.gridTemplateColumns = `min-content repeat(${grid.cols.length}, auto)`;
    this.gridEl.replaceChildren(...this.layout(grid));
    this.paintHeads(this.heads);
    this.paintCards();
    this.slider.max = Math.max(grid.steps.length - 1, 0);
    const contexts = new Set(grid.cells.map((c) => JSON.stringify([c.scenes, c.steps, c.weights])));
    this.sharedContext = contexts.size === 1;
    this.lazy = grid.cells.length > EAGER;
    this.seen.clear();
    this.watcher.disconnect();
    if (this.lazy) for (const tile of this.tiles) this.watcher.observe(tile.el);
    else this.preloader.load(grid.cells, this.index);
    this.renderDetail();
    this.show(this.index);
    this.fit();
  }

  // Tiles coming into view: preload their frames from the current step on.
  onSeen(entries) {
    const cells = [];
    for (const entry of entries) {
      const tile = entry.target.dpTile;
      if (!entry.isIntersecting || !tile || this.seen.has(tile)) continue;
      this.seen.add(tile);
      cells.push(tile.cell);
    }
    if (cells.length) this.preloader.load(cells, this.index);
  }

  // Each row and column header with its axis, as [element, axis].
  headers() {
    return [["dp-rowhead", this.grid.row_axis], ["dp-colhead", this.grid.col_axis]]
      .flatMap(([cls, axis]) => [...this.gridEl.getElementsByClassName(cls)].map((el) => [el, axis]));
  }

  // Colour the row and column headers: heads = {axis: {header: {colour, title}}} (the "What
  // drives the look" panel's pick); {} clears them.
  paintHeads(heads = {}) {
    this.heads = heads;
    for (const [el, axis] of this.headers()) {
      const head = heads[axis]?.[el.dataset.value];
      el.style.background = head?.colour ?? "";
      el.title = head?.title ?? "";
    }
  }

  // Fingerprints (dashboard.fingerprints.prints_spec): a card per level on the headers of its
  // factor's axis, and the A/B distances.
  setPrints(prints = {}) {
    this.prints = prints;
    this.paintCards();
    this.renderDistances();
    this.fit();  // the headers grew
  }

  paintCards() {
    for (const [el, axis] of this.headers()) {
      const cards = this.prints.cards?.[axis]?.[el.dataset.value] ?? [];
      el.querySelector(".dp-cards")?.remove();
      if (cards.length) el.append(h("div", { class: "dp-cards" }, ...cards.map((c) => card(c, cards.length > 1))));
    }
  }

  slotCounts(grid) {
    const counts = new Map();
    for (const c of grid.cells) counts.set(`${c.row}\u0000${c.col}`, (counts.get(`${c.row}\u0000${c.col}`) || 0) + 1);
    return counts;
  }

  layout(grid) {
    const head = (cls, value) => h("div", { class: cls, "data-value": value }, h("span", { class: "dp-headname" }, value));
    const nodes = [h("div", { class: "dp-corner" }, `${grid.row_label} ╲ ${grid.col_label}`),
      ...grid.cols.map((c) => head("dp-colhead", c))];
    const slots = new Map();
    for (const r of grid.rows) {
      nodes.push(head("dp-rowhead", r));
      for (const c of grid.cols) {
        const slot = h("div", { class: "dp-slot" });
        slots.set(`${r}\u0000${c}`, slot);
        nodes.push(slot);
      }
    }
    this.tiles = grid.cells.map((cell) => this.view(cell, "dp-tile"));
    for (const tile of this.tiles) {
      tile.el.dpTile = tile;
      tile.el.addEventListener("click", () => this.setSelected(tile.cell.id, true));
      tile.el.append(h("button", {
        class: "dp-pin", title: "pin as baseline",
        onclick: (event) => { event.stopPropagation(); this.setBaseline(tile.cell.id, true); },
      }, "pin"));
      slots.get(`${tile.cell.row}\u0000${tile.cell.col}`).append(tile.el);
    }
    return nodes;
  }

  view(cell, cls) {
    const pic = picture(cell);
    const cap = h("span", { class: "dp-cap" });
    const name = [cell.title, cell.levels, cell.tag].filter(Boolean).join(" · ");
    const damaged = cell.status === "damaged";
    const el = h("figure", { class: cls + (cell.note ? " dp-incomplete" : "") + (damaged ? " dp-damaged" : ""), "data-id": cell.id, title: [name, cell.note].filter(Boolean).join("\n") },
      pic.el, h("figcaption", {}, damaged ? h("span", { class: "dp-badge" }, "damaged") : "",
        h("span", { class: "dp-name" }, cell.title),
        cell.levels ? h("span", { class: "dp-levels" }, cell.levels) : "",
        cell.tag ? h("span", { class: "dp-tag" }, cell.tag) : "", cap));
    return { cell, pic, cap, el };
  }

  // ---- tile size ----

  setSize(size) {
    this.size = size;
    this.sizeSelect.value = size;
    this.fit();
  }

  // Set the tile width: a fixed size, each frame's own pixels, or (fit) the largest that puts
  // every column inside the player's width and, with fitHeight, every row inside the window.
  fit() {
    this.width = this.el.clientWidth;
    this.el.classList.toggle("dp-actual", this.size === "actual");
    for (const t of this.tiles) t.el.style.width = this.size === "actual" && t.cell.width ? `${t.cell.width}px` : "";
    if (this.size !== "fit") {
      if (this.size !== "actual") this.gridEl.style.setProperty("--dp-tile", `${this.size}px`);
      return;
    }
    if (!this.width || !this.tiles.length) return;
    let tile = 100;
    for (let pass = 0; pass < 2; pass++) tile = this.fitFrom(tile);
    this.gridEl.style.setProperty("--dp-tile", `${tile}px`);
  }

  // The fitting tile width, from the grid's size laid out with tiles `trial` px wide (what is
  // not tile, such as headings, gaps and captions, is taken as fixed).
  fitFrom(trial) {
    const across = this.grid.cols.length * this.perSlot;
    this.gridEl.style.setProperty("--dp-tile", `${trial}px`);
    const box = this.gridEl.getBoundingClientRect();
    let tile = (this.width - (box.width - trial * across)) / across;
    if (this.fitHeight) {
      const aspect = Math.max(...this.grid.cells.map((c) => (c.height && c.width ? c.height / c.width : 1)));
      const rows = this.grid.rows.length;
      const room = window.innerHeight - (box.top + window.scrollY) - 8;
      const fixed = box.height - trial * aspect * rows;
      if (room - fixed > rows * MIN_TILE * aspect) tile = Math.min(tile, (room - fixed) / (aspect * rows));
    }
    return Math.max(MIN_TILE, Math.floor(tile));
  }

  // ---- the enlarged view: selected cell beside the pinned baseline, in a fixed side panel ----

  makePanel() {
    this.compareSelect = select("dp-compare", Object.entries(COMPARE), (v) => this.setCompare(v));
    this.panelStep = h("span", { class: "dp-panel-step" });
    this.diff = h("div", { class: "dp-diff" });
    this.wipe = h("input", { class: "dp-wipe", type: "range", min: 0, max: 100, value: 50, "aria-label": "A/B slider",
      oninput: () => this.paintWipe() });
    this.distances = h("div", { class: "dp-distances" });
    this.stage = h("div", { class: "dp-stage" });
    const close = h("button", { class: "dp-close", title: "close (Esc)", "aria-label": "close", onclick: () => this.setSelected(null, true) }, "×");
    const filter = `dp-heat-${++players}`;
    this.heatFilter = `url(#${filter})`;
    this.heatCanvas = h("canvas", { class: "dp-frame dp-heatmap", role: "img", "aria-label": "|A − B| at this step, as a heat map" });
    this.scratch = document.createElement("canvas");
    this.heatView = h("figure", { class: "dp-big dp-heatview" }, h("div", { class: "dp-role" }, "|A − B|"), this.heatCanvas,
      h("figcaption", {}, h("span", { class: "dp-heatscale" }, "0 ", h("i", { style: `background: linear-gradient(to right, ${HEAT.join(", ")})` }), ` ${DIFF_SCALE}+`),
        h("span", {}, "per pixel: mean of |R|, |G|, |B| differences (0–255)")));
    return h("aside", { class: "dp-panel", hidden: "" }, heatFilter(filter),
      h("div", { class: "dp-panel-head" }, this.panelStep, labelled("compare", this.compareSelect), close),
      this.diff, this.distances, this.stage, this.wipe);
  }

  setCompare(mode) {
    this.compare = mode;
    this.compareSelect.value = mode;
    this.renderDetail();
  }

  renderDetail() {
    clearInterval(this.flicker);
    const roles = [["baseline", this.baseline], ["selected", this.selected]];
    const open = this.cells.has(this.selected);
    const shown = open ? roles.filter(([, id], n) => this.cells.has(id) && (n === 1 || id !== this.selected)) : [];
    const ab = shown.length === 2;
    const mode = ab ? this.compare : "side";
    this.bigs = shown.map(([role, id], n) => {
      const big = this.view(this.cells.get(id), `dp-big dp-${role}`);
      big.el.prepend(h("div", { class: "dp-role" }, ab ? `${"AB"[n]} · ${role}` : role));
      big.el.append(this.settingsTable(big.cell, n === 1 && ab ? this.cells.get(this.baseline) : null));
      return big;
    });
    this.stage.className = `dp-stage dp-${mode}`;
    this.stage.replaceChildren(...(mode === "diff" ? [this.heatView] : this.bigs.map((b) => b.el)));
    this.compareSelect.disabled = !ab;
    this.diff.textContent = ab ? this.differences(...this.bigs.map((b) => b.cell)) : "";
    this.renderDistances();
    this.wipe.hidden = mode !== "slider";
    this.panel.hidden = !open;
    for (const tile of this.tiles) {
      tile.el.classList.toggle("dp-is-selected", tile.cell.id === this.selected);
      tile.el.classList.toggle("dp-is-baseline", tile.cell.id === this.baseline);
    }
    if (mode === "flicker") {
      let front = 1;
      const swap = () => {
        this.bigs.forEach((b, n) => b.el.classList.toggle("dp-front", n === front));
        front = 1 - front;
      };
      swap();
      this.flicker = setInterval(swap, FLICKER_MS);
    }
    this.bigs.forEach((big) => this.paint(big));
    this.paintWipe();
    this.paintHeat();
    this.renderContext();
    if (open) this.sizeBigs(mode === "diff" ? [{ el: this.heatView, pic: { el: this.heatCanvas }, cell: this.bigs[0].cell }] : this.bigs);
  }

  // Size the enlarged frames (`shown`: views) to the panel: stacked or side by side, whichever
  // shows them larger.
  sizeBigs(shown) {
    const body = this.stage.getBoundingClientRect();
    const caption = Math.max(...shown.map((b) => b.el.offsetHeight - b.pic.el.offsetHeight), 0);
    const n = this.compare === "side" ? shown.length : 1;
    const aspect = Math.max(...shown.map((b) => (b.cell.width && b.cell.height ? b.cell.height / b.cell.width : 1)));
    const across = (w, hgt) => Math.max(0, Math.min(w, (hgt - caption) / aspect));
    const column = across(body.width, (body.height - 8 * (n - 1)) / n);
    const row = across((body.width - 8 * (n - 1)) / n, body.height);
    this.stage.classList.toggle("dp-row", row > column);
    const width = Math.floor(Math.max(column, row, MIN_TILE));
    for (const b of shown) b.el.style.width = `${width}px`;
  }

  // The difference view: |B − A| per pixel at the step shown, drawn without reading a pixel back
  // (the canvas's "difference" compositing, then the heat filter), so it works on frames from
  // file:// too. Painted again when a frame it needs has loaded.
  paintHeat() {
    if (this.compare !== "diff" || this.bigs.length !== 2 || this.panel.hidden) return;
    const sources = this.bigs.map((b) => this.source(b.cell, b.cell.at[this.index] ?? 0));
    if (sources.some((s) => !s)) return;
    const { width, height } = this.bigs[0].cell.width ? this.bigs[0].cell : { width: sources[0][3], height: sources[0][4] };
    for (const canvas of [this.scratch, this.heatCanvas]) [canvas.width, canvas.height] = [width, height];
    const x = this.scratch.getContext("2d");
    x.globalCompositeOperation = "copy";
    x.drawImage(...sources[0], 0, 0, width, height);
    x.globalCompositeOperation = "difference";
    x.drawImage(...sources[1], 0, 0, width, height);
    const y = this.heatCanvas.getContext("2d");
    y.filter = this.heatFilter;  // after the resize, which resets it
    y.drawImage(this.scratch, 0, 0);
  }

  // [image, x, y, width, height] of frame k of a cell in its image, once that has loaded (else
  // null, and the difference view is painted again when it loads).
  source(cell, k) {
    const image = this.preloader.fetch(urlOf(cell, k));
    if (!image.complete || !image.naturalWidth) {
      image.addEventListener("load", () => this.paintHeat(), { once: true });
      return null;
    }
    if (!cell.sprite) return [image, 0, 0, image.naturalWidth, image.naturalHeight];
    const { x, y } = spriteAt(cell, k);
    return [image, x, y, cell.width, cell.height];
  }

  // The one-number distances between A and B: their final frames' palettes and spectra, and where
  // they differ in one factor, the distances between those levels (fingerprints, CMMD per judge).
  renderDistances() {
    const [a, b] = this.bigs.length === 2 ? this.bigs.map((big) => big.cell) : [];
    const lines = [];
    const own = [a && this.prints.runs?.[a.id], b && this.prints.runs?.[b.id]];
    if (own[0] && own[1]) {
      lines.push(`A ↔ B, final frames: palette ${fixed(paletteDistance(own[0].palette, own[1].palette), 1)} ΔE*ab (EMD)` +
        ` · spectrum ${fixed(spectrumDistance(own[0].spectrum, own[1].spectrum), 3)} (RMS log10 power)`);
    }
    const differ = a ? [...new Set([...Object.keys(a.factors || {}), ...Object.keys(b.factors || {})])]
      .filter((k) => String(a.factors?.[k] ?? "-") !== String(b.factors?.[k] ?? "-")) : [];
    const levels = differ.length === 1 && a.experiment === b.experiment ? this.prints.distances?.[a.experiment]?.[differ[0]] : null;
    if (levels) {
      const [la, lb] = [String(a.factors[differ[0]]), String(b.factors[differ[0]])];
      const judged = Object.entries(levels.cmmd || {}).map(([judge, m]) => `CMMD ${judge} ${fixed(m[la]?.[lb], 3)}`);
      lines.push(`${this.grid.factor_labels?.[differ[0]] ?? differ[0]} ${la} ↔ ${lb}, all their runs: palette ` +
        `${fixed(levels.palette?.[la]?.[lb], 1)} · spectrum ${fixed(levels.spectrum?.[la]?.[lb], 3)}` +
        (judged.length ? ` · ${judged.join(" · ")}` : ""));
    }
    this.distances.textContent = lines.join("\n");
  }

  // "B differs from A in scenes: city → sea · seed: 1 → 2": the factors whose levels differ.
  differences(a, b) {
    const names = [...new Set([...Object.keys(a.factors || {}), ...Object.keys(b.factors || {})])];
    const text = (cell, k) => String(cell.factors?.[k] ?? "-");
    const differ = names.filter((k) => text(a, k) !== text(b, k))
      .map((k) => `${this.grid.factor_labels?.[k] ?? k}: ${text(a, k)} → ${text(b, k)}`);
    return differ.length ? `B differs from A in ${differ.join(" · ")}` : "A and B differ in no factor";
  }

  settingsTable(cell, other) {
    const rows = Object.entries(cell.settings || {}).map(([k, v]) => {
      const differs = other && JSON.stringify(other.settings?.[k]) !== JSON.stringify(v);
      return h("tr", { class: differs ? "dp-differs" : "" }, h("th", {}, k), h("td", {}, JSON.stringify(v)));
    });
    return h("details", { class: "dp-settings" }, h("summary", {}, other ? "settings (differences marked)" : "settings"),
      rows.length ? h("table", {}, ...rows) : h("p", {}, "no settings file"));
  }

  paintWipe() {
    const top = this.bigs[1];
    for (const b of this.bigs) b.pic.el.style.clipPath = "";
    if (this.compare === "slider" && top) top.pic.el.style.clipPath = `inset(0 0 0 ${this.wipe.value}%)`;
  }

  setSelected(id, fromUser = false) {
    this.selected = fromUser && id === this.selected ? null : id || null;
    this.renderDetail();
    if (fromUser) this.hooks.onSelect?.(this.selected ?? "");
  }

  setBaseline(id, fromUser = false) {
    this.baseline = id || null;
    this.renderDetail();
    if (fromUser) this.hooks.onBaseline?.(this.baseline ?? "");
  }

  // ---- context: the scene and prompt weights at the current step ----

  // The scenes active at the frame a cell shows, as [scene, weight] pairs, from its frame table.
  activeScenes(cell) {
    const weights = cell.weights?.[cell.at[this.index] ?? 0] ?? [];
    return weights.map((w, n) => [n, w]).filter(([n, w]) => w > 0 && cell.scenes?.[n]);
  }

  renderContext() {
    const cell = this.cells.get(this.selected) ?? this.grid.cells.find((c) => c.scenes?.length);
    const active = cell ? this.activeScenes(cell) : [];
    if (!active.length) {
      this.context.replaceChildren();
      this.contextKey = null;
      return;
    }
    const key = JSON.stringify([cell.id, this.sharedContext, active]);
    if (key === this.contextKey && this.context.childElementCount) return;  // same as shown
    this.contextKey = key;
    const whose = this.sharedContext ? "all cells" : [cell.title, cell.levels, cell.tag].filter(Boolean).join(" · ");
    const scenes = active.map(([n, w]) => `${n + 1}${active.length > 1 ? ` (${Math.round(w * 100)} %)` : ""}`).join(" → ");
    const prompts = active.flatMap(([n, w]) => cell.scenes[n].map((p) =>
      h("span", { class: "dp-prompt" + (p.weight < 0 ? " dp-negative" : "") }, p.text, h("b", {}, ` ${+(p.weight * w).toFixed(2)}`))));
    this.context.replaceChildren(h("span", { class: "dp-scene" }, `scene ${scenes} of ${cell.scenes.length}`),
      ...prompts, h("span", { class: "dp-whose" }, whose));
  }

  // ---- playing ----

  paint(view) {
    const k = view.cell.at[this.index] ?? 0;
    view.pic.show(k);
    const loss = view.cell.losses?.[k];
    const cost = runtime(view.cell);
    view.cap.textContent = `step ${view.cell.steps[k] ?? "-"}` + (loss == null ? "" : ` · loss ${loss.toFixed(3)}`) +
      (cost ? ` · ${cost}` : "");
  }

  // The position in grid.steps of `step` (steps done): of the last step at or before it, else 0.
  indexOf(step) {
    const steps = this.grid.steps;
    let index = 0;
    while (index + 1 < steps.length && steps[index + 1] <= step) index++;
    return index;
  }

  // Show every cell at the step in position `index` of grid.steps, all in the same task, hence
  // in the same paint of the page.
  show(index) {
    const n = this.grid.steps.length;
    this.index = Math.max(0, Math.min(index, n - 1));
    for (const view of this.tiles) this.paint(view);
    for (const view of this.bigs) this.paint(view);
    this.paintHeat();
    this.slider.value = String(this.index);
    const text = n ? `step ${this.grid.steps[this.index]} · ${this.index + 1}/${n}` : "no frames";
    this.label.textContent = text;
    this.panelStep.textContent = text;
    if (this.context.isConnected) this.renderContext();
  }

  // Whether every tile's frame at the step in position `index` has loaded, so showing it leaves
  // no blank.
  ready(index) {
    const tiles = this.lazy ? [...this.seen] : this.tiles;
    return tiles.every((t) => this.preloader.ready(urlOf(t.cell, t.cell.at[index] ?? 0)));
  }

  // The position of the step after this one, and the direction after it, under loop or reflect.
  following() {
    const n = this.grid.steps.length;
    if (n < 2) return [this.index, this.dir];
    if (this.mode === "loop") return [(this.index + 1) % n, 1];
    const dir = this.index + this.dir < 0 || this.index + this.dir >= n ? -this.dir : this.dir;
    return [this.index + dir, dir];
  }

  tick(now) {
    if (!this.playing) return;
    const period = 1000 / this.fps;
    if (now - this.last >= period) {
      const [index, dir] = this.following();
      if (this.ready(index)) {
        this.last = Math.max(this.last + period, now - period);
        this.dir = dir;
        this.show(index);
      }
    }
    requestAnimationFrame(this.tick);
  }

  setPlaying(playing) {
    this.playing = playing;
    this.playButton.replaceChildren(icon(playing ? "pause" : "play"));
    this.playButton.setAttribute("aria-label", playing ? "pause" : "play");
  }

  play() {
    if (this.playing || this.grid.steps.length < 2) return;
    this.setPlaying(true);
    this.last = performance.now();
    requestAnimationFrame(this.tick);
  }

  pause() {
    if (!this.playing) return;
    this.setPlaying(false);
    this.reportStep();
  }

  // Tell the hooks the step shown (steps done).
  reportStep() {
    const step = this.grid.steps[this.index];
    if (step !== undefined) this.hooks.onStep?.(step);
  }

  toggle() {
    this.playing ? this.pause() : this.play();
  }

  seek(index) {
    this.show(index);
    this.reportStep();
  }

  nudge(delta) {
    this.pause();
    this.seek(this.index + delta);
  }

  jump(index) {
    this.pause();
    this.seek(index);
  }

  // For tests and the benchmark: where the player is and what each tile shows.
  state() {
    return {
      index: this.index, step: this.grid.steps[this.index], playing: this.playing, pending: this.preloader.pending,
      selected: this.selected, size: this.size,
      tiles: this.tiles.map((t) => ({ id: t.cell.id, row: t.cell.row, col: t.cell.col, frame: t.cell.at[this.index] })),
    };
  }
}

// Static export: mount a player on `el` for a grid spec.
export function mount(el, grid, options = {}) {
  const player = new GridPlayer(el, options);
  player.prints = grid.prints ?? {};
  player.setGrid(grid);
  window.gridPlayer = player;
  return player;
}

// Panel JSComponent entry point: the grid, step (steps done), selection and baseline sync with
// Python.
export function render({ model, el }) {
  const player = new GridPlayer(el, {
    scoped: model.scoped,
    fitHeight: !model.scoped,
    hooks: {
      onStep: (step) => { model.step = step; },
      onSelect: (id) => { model.selected = id; },
      onBaseline: (id) => { model.baseline = id; },
    },
  });
  player.selected = model.selected || null;
  player.baseline = model.baseline || null;
  player.heads = model.heads;
  player.prints = model.prints;
  player.setGrid(model.grid, model.step);
  window.gridPlayer = player;
  model.on("grid", () => player.setGrid(model.grid));
  model.on("step", () => model.step !== player.grid.steps[player.index] && player.show(player.indexOf(model.step)));
  model.on("selected", () => model.selected !== (player.selected ?? "") && player.setSelected(model.selected));
  model.on("baseline", () => model.baseline !== (player.baseline ?? "") && player.setBaseline(model.baseline));
  model.on("heads", () => player.paintHeads(model.heads));
  model.on("prints", () => player.setPrints(model.prints));
  model.on("remove", () => player.destroy());
}
