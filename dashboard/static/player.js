// Synced grid player: every cell of the grid shows its frame at one shared step.
// One file for both front ends: the Panel app calls `render` (frames are <img> URLs on the
// server's static route) and the static export calls `mount` (frames are sprite sheets).

const SPEEDS = [1, 2, 5, 10, 15, 25, 40];

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

// The URL holding frame k of a cell.
const urlOf = (cell, k) => (cell.sheet ? cell.sheet.url : cell.frames[k]);

// A cell's picture: an <img> whose src is swapped, or a window onto its sprite sheet.
function picture(cell) {
  if (cell.sheet) {
    const { url, cols, rows } = cell.sheet;
    const el = h("div", { class: "dp-frame dp-sheet", role: "img", "aria-label": cell.title });
    el.style.backgroundImage = `url("${url}")`;
    el.style.backgroundSize = `${cols * 100}% ${rows * 100}%`;
    el.style.aspectRatio = `${cell.width} / ${cell.height}`;
    const pct = (i, n) => (n > 1 ? (100 * i) / (n - 1) : 0);
    return {
      el,
      show(k) {
        el.style.backgroundPosition = `${pct(k % cols, cols)}% ${pct(Math.floor(k / cols), rows)}%`;
      },
    };
  }
  const el = h("img", {
    class: "dp-frame", alt: cell.title, width: cell.width, height: cell.height, draggable: "false",
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

  load(cells, from) {
    const longest = Math.max(0, ...cells.map((c) => c.steps.length));
    for (let d = 0; d < longest; d++) {
      for (const cell of cells) {
        const k = (from + d) % longest;
        if (k < cell.steps.length) this.fetch(urlOf(cell, k));
      }
    }
  }

  fetch(url) {
    if (this.images.has(url)) return;
    const image = new Image();
    image.decoding = "async";
    image.src = url;
    image.decode().catch(() => {});
    this.images.set(url, image);
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
  constructor(root, hooks = {}) {
    this.hooks = hooks;
    this.grid = { rows: [], cols: [], steps: [], cells: [] };
    this.cells = new Map();
    this.tiles = [];
    this.bigs = [];
    this.i = 0;
    this.dir = 1;
    this.fps = 10;
    this.mode = "loop";
    this.playing = false;
    this.selected = null;
    this.baseline = null;
    this.preloader = new Preloader();
    this.tick = this.tick.bind(this);

    this.playButton = h("button", { class: "dp-play", title: "play / pause (space)", onclick: () => this.toggle() }, "▶");
    const stepButton = (delta, text) =>
      h("button", { class: "dp-nudge", title: delta < 0 ? "previous step (←)" : "next step (→)", onclick: () => this.nudge(delta) }, text);
    this.slider = h("input", { class: "dp-slider", type: "range", min: 0, max: 0, value: 0, oninput: () => this.seek(+this.slider.value) });
    this.label = h("span", { class: "dp-step" });
    this.speed = h("select", { class: "dp-speed", title: "speed", onchange: () => (this.fps = +this.speed.value) },
      ...SPEEDS.map((f) => h("option", { value: f }, `${f} fps`)));
    this.speed.value = String(this.fps);
    this.modeSelect = h("select", { class: "dp-mode", title: "at the end", onchange: () => (this.mode = this.modeSelect.value) },
      h("option", { value: "loop" }, "loop"), h("option", { value: "reflect" }, "reflect"));
    this.detail = h("div", { class: "dp-detail" });
    this.gridEl = h("div", { class: "dp-grid" });
    this.el = h("div", { class: "dp-player" },
      h("div", { class: "dp-controls" }, this.playButton, stepButton(-1, "◀"), stepButton(1, "▶▶"), this.slider,
        this.label, this.speed, this.modeSelect),
      this.detail, this.gridEl);
    root.append(this.el);

    this.onKey = (event) => {
      const target = event.composedPath()[0];
      if (["INPUT", "SELECT", "TEXTAREA", "BUTTON"].includes(target?.tagName) || target?.isContentEditable) return;
      if (event.key === "ArrowLeft" || event.key === "ArrowRight") this.nudge(event.key === "ArrowLeft" ? -1 : 1);
      else if (event.key === " ") this.toggle();
      else return;
      event.preventDefault();
    };
    document.addEventListener("keydown", this.onKey);
  }

  destroy() {
    this.pause();
    document.removeEventListener("keydown", this.onKey);
    this.el.remove();
  }

  setGrid(grid) {
    this.grid = grid;
    this.cells = new Map(grid.cells.map((c) => [c.id, c]));
    this.gridEl.style.gridTemplateColumns = `auto repeat(${grid.cols.length}, auto)`;
    this.gridEl.replaceChildren(...this.layout(grid));
    this.slider.max = Math.max(grid.steps.length - 1, 0);
    this.preloader.load(grid.cells, this.i);
    this.renderDetail();
    this.show(this.i);
  }

  layout(grid) {
    const nodes = [h("div", { class: "dp-corner" }, `${grid.row_axis} ╲ ${grid.col_axis}`),
      ...grid.cols.map((c) => h("div", { class: "dp-colhead" }, c))];
    const slots = new Map();
    for (const r of grid.rows) {
      nodes.push(h("div", { class: "dp-rowhead" }, r));
      for (const c of grid.cols) {
        const slot = h("div", { class: "dp-slot" });
        slots.set(JSON.stringify([r, c]), slot);
        nodes.push(slot);
      }
    }
    this.tiles = grid.cells.map((cell) => this.view(cell, "dp-tile"));
    for (const tile of this.tiles) {
      tile.el.addEventListener("click", () => this.setSelected(tile.cell.id, true));
      tile.el.append(h("button", {
        class: "dp-pin", title: "pin as baseline",
        onclick: (event) => { event.stopPropagation(); this.setBaseline(tile.cell.id, true); },
      }, "pin"));
      slots.get(JSON.stringify([tile.cell.row, tile.cell.col])).append(tile.el);
    }
    return nodes;
  }

  view(cell, cls) {
    const pic = picture(cell);
    const cap = h("span", { class: "dp-cap" });
    const el = h("figure", { class: cls + (cell.note ? " dp-incomplete" : ""), "data-id": cell.id, title: cell.note || null },
      pic.el, h("figcaption", {}, h("span", { class: "dp-name" }, cell.title), cap));
    return { cell, pic, cap, el };
  }

  renderDetail() {
    const roles = [["baseline", this.baseline], ["selected", this.selected]];
    this.bigs = roles.filter(([, id]) => this.cells.has(id)).map(([role, id]) => {
      const big = this.view(this.cells.get(id), `dp-big dp-${role}`);
      const close = () => (role === "baseline" ? this.setBaseline(null, true) : this.setSelected(null, true));
      big.el.prepend(h("div", { class: "dp-role" }, role, h("button", { class: "dp-close", title: "close", onclick: close }, "×")));
      return big;
    });
    this.detail.replaceChildren(...this.bigs.map((b) => b.el));
    for (const tile of this.tiles) {
      tile.el.classList.toggle("dp-is-selected", tile.cell.id === this.selected);
      tile.el.classList.toggle("dp-is-baseline", tile.cell.id === this.baseline);
    }
    this.bigs.forEach((big) => this.paint(big));
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

  paint(view) {
    const k = view.cell.at[this.i] ?? 0;
    view.pic.show(k);
    const loss = view.cell.losses?.[k];
    view.cap.textContent = `step ${view.cell.steps[k] ?? "-"}` + (loss == null ? "" : ` · loss ${loss.toFixed(3)}`);
  }

  // Switch every cell to step index i, all in the same task, hence the same animation frame.
  show(i) {
    const n = this.grid.steps.length;
    this.i = Math.max(0, Math.min(i, n - 1));
    for (const view of this.tiles) this.paint(view);
    for (const view of this.bigs) this.paint(view);
    this.slider.value = String(this.i);
    this.label.textContent = n ? `step ${this.grid.steps[this.i]} · ${this.i + 1}/${n}` : "no frames";
  }

  // Whether every tile's frame at step index i has loaded, so showing it leaves no blank.
  ready(i) {
    return this.tiles.every((t) => this.preloader.ready(urlOf(t.cell, t.cell.at[i] ?? 0)));
  }

  // The step index after this one, and the direction after it, under loop or reflect.
  following() {
    const n = this.grid.steps.length;
    if (n < 2) return [this.i, this.dir];
    if (this.mode === "loop") return [(this.i + 1) % n, 1];
    const dir = this.i + this.dir < 0 || this.i + this.dir >= n ? -this.dir : this.dir;
    return [this.i + dir, dir];
  }

  tick(now) {
    if (!this.playing) return;
    const period = 1000 / this.fps;
    if (now - this.last >= period) {
      const [i, dir] = this.following();
      if (this.ready(i)) {
        this.last = Math.max(this.last + period, now - period);
        this.dir = dir;
        this.show(i);
      }
    }
    requestAnimationFrame(this.tick);
  }

  play() {
    if (this.playing || this.grid.steps.length < 2) return;
    this.playing = true;
    this.playButton.textContent = "⏸";
    this.last = performance.now();
    requestAnimationFrame(this.tick);
  }

  pause() {
    if (!this.playing) return;
    this.playing = false;
    this.playButton.textContent = "▶";
    this.hooks.onStep?.(this.i);
  }

  toggle() {
    this.playing ? this.pause() : this.play();
  }

  seek(i) {
    this.show(i);
    this.hooks.onStep?.(this.i);
  }

  nudge(delta) {
    this.pause();
    this.seek(this.i + delta);
  }

  // For tests and the benchmark: where the player is and what each tile shows.
  state() {
    return {
      index: this.i, step: this.grid.steps[this.i], playing: this.playing, pending: this.preloader.pending,
      tiles: this.tiles.map((t) => ({ id: t.cell.id, row: t.cell.row, col: t.cell.col, frame: t.cell.at[this.i] })),
    };
  }
}

// Static export: mount a player on `el` for a grid spec.
export function mount(el, grid, hooks = {}) {
  const player = new GridPlayer(el, hooks);
  player.setGrid(grid);
  window.gridPlayer = player;
  return player;
}

// Panel JSComponent entry point: the grid, step, selection and baseline sync with Python.
export function render({ model, el }) {
  const player = new GridPlayer(el, {
    onStep: (i) => { model.step = i; },
    onSelect: (id) => { model.selected = id; },
    onBaseline: (id) => { model.baseline = id; },
  });
  player.selected = model.selected || null;
  player.baseline = model.baseline || null;
  player.i = model.step;
  player.setGrid(model.grid);
  window.gridPlayer = player;
  model.on("grid", () => player.setGrid(model.grid));
  model.on("step", () => model.step !== player.i && player.show(model.step));
  model.on("selected", () => player.setSelected(model.selected));
  model.on("baseline", () => player.setBaseline(model.baseline));
  model.on("remove", () => player.destroy());
}
