// vms dashboard: one screen over the API, no CDN and no online tiles (government networks are offline).
// Reads go through api(): with the key kept in sessionStorage (this tab only) when reads are closed (401).
"use strict";

const KEY = "vms.apiKey";
const REFRESH_MS = 60000;
const days = 14; // the online-rate trend
const COLORS = { ON: "#1e9e45", OFF: "#d93025", DEFECT: "#f29900", unknown: "#8a949e" };
const DRAW_ORDER = ["unknown", "ON", "DEFECT", "OFF"]; // down cameras drawn last: on top
const $ = (s) => document.querySelector(s);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const pct = (r) => (r === null || r === undefined || Number.isNaN(r) ? "–" : (r * 100).toFixed(1) + "%");
const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

// --- API access and the key prompt --------------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, detail) { super(`${status}: ${detail}`); this.status = status; }
}

let keyWaiter = null; // one prompt for every read that got a 401 meanwhile

function askForKey(reason) {
  if (!keyWaiter) {
    keyWaiter = new Promise((resolve) => {
      document.body.dataset.state = "key";
      $("#key-error").textContent = reason || "";
      $("#key-prompt").hidden = false;
      $("#key-input").value = "";
      $("#key-input").focus();
      $("#key-form").onsubmit = (ev) => {
        ev.preventDefault();
        const key = $("#key-input").value.trim();
        if (!key) return;
        sessionStorage.setItem(KEY, key);
        $("#key-prompt").hidden = true;
        document.body.dataset.state = "loading";
        keyWaiter = null;
        resolve();
      };
    });
  }
  return keyWaiter;
}

async function api(path, { optional = false } = {}) {
  for (let attempt = 0; attempt < 5; attempt++) {
    const key = sessionStorage.getItem(KEY);
    const r = await fetch(path, { headers: key ? { "X-API-Key": key } : {} });
    if (r.status === 401) {
      const detail = (await r.json().catch(() => ({}))).detail;
      await askForKey(key ? `key refused: ${detail || "unknown key"}` : "");
      continue;
    }
    if (optional && r.status === 404) return null; // an endpoint this server does not have (yet)
    if (!r.ok) {
      const detail = (await r.json().catch(() => ({}))).detail;
      throw new HttpError(r.status, detail || r.statusText);
    }
    return r.json();
  }
  throw new HttpError(401, "no key accepted");
}

// --- map: region polygons and camera points on a blank background -----------------------------------------

const map = L.map("map", { preferCanvas: true, attributionControl: false, zoomSnap: 0.25, minZoom: 2, maxZoom: 19 });
map.setView([35.0, 118.3], 10); // until the data says where
const canvasRenderer = L.canvas({ padding: 0.2 });
let regionLayer = null;
let regionBounds = {};

// Cameras: one canvas drawn in a few passes (a path per status), not a layer per camera, so 100,000 points pan
// and zoom smoothly. Positions are kept as Web Mercator fractions and scaled to the zoom at each redraw.
const PointsLayer = L.Layer.extend({
  initialize() { this.data = null; },
  onAdd(m) {
    this.canvas = L.DomUtil.create("canvas", "vms-points leaflet-zoom-hide");
    this.canvas.style.position = "absolute";
    this.canvas.style.pointerEvents = "none";
    // a pane of its own above the region polygons (overlayPane, z-index 400) and below popups and tooltips
    const pane = m.getPane("cameras") || m.createPane("cameras");
    pane.style.zIndex = 450;
    pane.style.pointerEvents = "none";
    pane.appendChild(this.canvas);
    m.on("moveend zoomend resize viewreset", this.redraw, this);
    m.on("click", this.pick, this);
    this.redraw();
  },
  onRemove(m) {
    this.canvas.remove();
    m.off("moveend zoomend resize viewreset", this.redraw, this);
    m.off("click", this.pick, this);
  },
  setData(d) {
    const n = d.count;
    const mx = new Float64Array(n), my = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      mx[i] = (d.lon[i] + 180) / 360;
      const s = Math.sin((Math.max(-85, Math.min(85, d.lat[i])) * Math.PI) / 180);
      my[i] = 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI);
    }
    this.data = { ...d, mx, my };
    this.redraw();
  },
  view() {
    const m = this._map, size = m.getSize();
    const scale = 256 * Math.pow(2, m.getZoom());
    const origin = m.project(m.containerPointToLatLng([0, 0]));
    return { size, scale, ox: origin.x, oy: origin.y };
  },
  redraw() {
    const m = this._map;
    if (!m || !this.canvas) return;
    const { size, scale, ox, oy } = this.view();
    const dpr = window.devicePixelRatio || 1;
    const c = this.canvas;
    L.DomUtil.setPosition(c, m.containerPointToLayerPoint([0, 0]));
    c.width = Math.round(size.x * dpr); c.height = Math.round(size.y * dpr);
    c.style.width = size.x + "px"; c.style.height = size.y + "px";
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const d = this.data;
    let drawn = 0;
    if (d) {
      const r = m.getZoom() >= 14 ? 6 : m.getZoom() >= 11 ? 4.5 : d.count > 20000 ? 2 : 3.5;
      for (const name of DRAW_ORDER) {
        const code = d.statuses.indexOf(name);
        ctx.beginPath();
        for (let i = 0; i < d.count; i++) {
          if (d.status[i] !== code) continue;
          const x = d.mx[i] * scale - ox, y = d.my[i] * scale - oy;
          if (x < -r || y < -r || x > size.x + r || y > size.y + r) continue;
          ctx.moveTo(x + r, y);
          ctx.arc(x, y, r, 0, 2 * Math.PI);
          drawn++;
        }
        ctx.fillStyle = COLORS[name];
        ctx.fill();
        if (r >= 3.5) { ctx.strokeStyle = "#ffffff"; ctx.lineWidth = 1; ctx.stroke(); }
      }
    }
    $("#map").dataset.points = String(drawn);
  },
  async pick(ev) {
    const d = this.data;
    if (!d) return;
    const { scale, ox, oy } = this.view();
    const p = ev.containerPoint;
    let best = -1, bestD = 64; // within 8 px
    for (let i = 0; i < d.count; i++) {
      const dx = d.mx[i] * scale - ox - p.x, dy = d.my[i] * scale - oy - p.y;
      const dd = dx * dx + dy * dy;
      if (dd < bestD) { bestD = dd; best = i; }
    }
    if (best < 0) return;
    const id = d.id[best];
    const popup = L.popup().setLatLng([d.lat[best], d.lon[best]]).setContent(`camera ${id} …`).openOn(this._map);
    try {
      const cam = await api(`/api/v1/cameras/${id}`);
      const rec = cam.record || {};
      popup.setContent(
        `<b>${esc(rec.name || id)}</b><br>${esc(rec.device_id || rec.local_id || "")}<br>` +
        `status <span class="st-${esc(rec.status)}">${esc(rec.status || "unknown")}</span><br>${esc(rec.address || "")}`,
      );
    } catch (err) {
      popup.setContent(`camera ${id}: ${esc(err.message)}`);
    }
  },
});
const points = new PointsLayer().addTo(map);

async function loadRegions() {
  const geo = await api("/api/v1/dashboard/regions");
  if (regionLayer) regionLayer.remove();
  regionBounds = {};
  regionLayer = L.geoJSON(geo, {
    renderer: canvasRenderer,
    style: (f) => ({
      color: "#17324d", weight: f.properties.parent_code ? 1 : 2, fillColor: "#ffffff", fillOpacity: 0.55,
    }),
    onEachFeature: (f, layer) => {
      regionBounds[f.properties.code] = layer.getBounds();
      layer.bindTooltip(`${esc(f.properties.name)} (${esc(f.properties.code)})`, { sticky: true });
    },
  }).addTo(map);
  regionLayer.bringToBack();
  return geo.features.length;
}

function fitMap(nRegions, d) {
  if (nRegions && regionLayer) { map.fitBounds(regionLayer.getBounds(), { padding: [10, 10] }); return; }
  if (!d || !d.count) return;
  let w = 180, s = 90, e = -180, n = -90;
  for (let i = 0; i < d.count; i++) {
    w = Math.min(w, d.lon[i]); e = Math.max(e, d.lon[i]); s = Math.min(s, d.lat[i]); n = Math.max(n, d.lat[i]);
  }
  map.fitBounds([[s, w], [n, e]], { padding: [20, 20], maxZoom: 15 });
}

function legend(d) {
  const counts = Object.fromEntries(d.statuses.map((s) => [s, 0]));
  for (let i = 0; i < d.count; i++) counts[d.statuses[d.status[i]]]++;
  $("#legend").innerHTML = d.statuses
    .map((s) => `<span data-status="${esc(s)}"><i style="background:${COLORS[s]}"></i>${esc(s)} ${num(counts[s])}</span>`)
    .join("") + (d.without_position ? ` <span class="muted">(${num(d.without_position)} without position)</span>` : "");
}

// --- indicators, region table, events, trend -------------------------------------------------------------

function kpi(id, rate, detail, good) {
  const el = $(`#k-${id}`);
  el.textContent = pct(rate);
  el.className = good === undefined || rate === null || rate === undefined ? "" : good ? "good" : "bad";
  $(`#k-${id}-n`).textContent = detail || "";
}

// The indicators, the region table and the trend are the coverage statistics (GET /api/v1/coverage/summary and
// /api/v1/coverage/indicators); without them (an error, a server without them) those parts show "–" and the
// map and the status changes still work.
function showIndicators(sum, ind, quality) {
  const target = quality ? quality.target : undefined;
  if (ind) {
    kpi("online", ind.online_rate_now, `${num(ind.online_now)} / ${num(ind.registered)} now · ${days}-day ${pct(ind.online_rate)}`);
    kpi("intact", ind.intact_rate, `${num(ind.intact)} / ${num(ind.registered)}`);
    kpi("aggregation", ind.aggregation_rate, `${num(ind.aggregated)} aggregated`);
    const q = ind.quality_pass_rate;
    kpi("quality", q, `${num(ind.quality_passed)} pass` + (target ? ` · target ${pct(target)}` : ""),
      q === null || target === undefined ? undefined : q >= target);
  } else {
    for (const id of ["online", "intact", "aggregation", "quality"]) kpi(id, null, "coverage statistics unavailable");
  }
  $("#k-total").textContent = sum ? num(sum.cameras) : "–";
  const order = (s) => { const i = ["ON", "OFF", "DEFECT", "unknown"].indexOf(s); return i < 0 ? 9 : i; };
  $("#k-status").innerHTML = sum ? Object.entries(sum.by_status).sort((a, b) => order(a[0]) - order(b[0]))
    .map(([s, n]) => `<span class="st-${esc(s)}">${esc(s)} ${num(n)}</span>`).join(" · ") : "";
}

function showRegions(sum, ind) {
  const rates = Object.fromEntries(((ind && ind.by_region) || []).map((r) => [r.region, r]));
  const rows = (sum && sum.by_region) || [];
  $("#t-regions tbody").innerHTML = rows.map((r) => {
    const st = r.by_status || {}, x = rates[r.region] || {};
    return `<tr data-code="${esc(r.region)}"><td>${esc(r.region)}</td><td>${esc(r.name || "")}</td>` +
      `<td class="n">${num(r.cameras)}</td><td class="n">${num(st.ON || 0)}</td><td class="n">${num(st.OFF || 0)}</td>` +
      `<td class="n">${num(st.DEFECT || 0)}</td><td class="n">${num(st.unknown || 0)}</td>` +
      `<td class="n">${pct(x.online_rate_now)}</td><td class="n">${pct(x.online_rate)}</td>` +
      `<td class="n">${pct(x.intact_rate)}</td><td class="n">${pct(x.aggregation_rate)}</td>` +
      `<td class="n">${pct(x.quality_pass_rate)}</td><td class="n">${r.per_km2 === null || r.per_km2 === undefined ? "–" : r.per_km2.toFixed(2)}</td></tr>`;
  }).join("");
}

function when(iso) {
  const t = new Date(iso), p = (n) => String(n).padStart(2, "0");
  return `${p(t.getMonth() + 1)}-${p(t.getDate())} ${p(t.getHours())}:${p(t.getMinutes())}`;
}

function showEvents(items) {
  $("#t-events tbody").innerHTML = items.length ? items.map((e) =>
    `<tr><td title="${esc(e.at)}">${esc(when(e.at))}</td>` +
    `<td title="${esc(e.device_id || e.local_id || e.camera_id)}">${esc(e.name || e.device_id || e.camera_id)}</td>` +
    `<td><span class="st-${esc(e.previous)}">${esc(e.previous || "?")}</span> → <span class="st-${esc(e.status)}">${esc(e.event)}</span></td>` +
    `<td>${esc([e.stage, e.cause].filter(Boolean).join(": "))}</td></tr>`).join("")
    : `<tr><td colspan="4" class="muted">no status change recorded yet</td></tr>`;
}

function showTrend(days) {
  const svg = $("#trend"), W = 400, H = 120, P = 14;
  const known = days.filter((d) => d.rate !== null && d.rate !== undefined);
  const x = (i) => P + (i * (W - 2 * P)) / Math.max(1, days.length - 1);
  const y = (r) => H - P - r * (H - 2 * P);
  const parts = [`<line x1="${P}" y1="${y(0)}" x2="${W - P}" y2="${y(0)}" stroke="#ccd"/>`,
    `<line x1="${P}" y1="${y(1)}" x2="${W - P}" y2="${y(1)}" stroke="#dde"/>`,
    `<text x="${P + 2}" y="${y(1) - 3}" font-size="9" fill="#8a949e">100%</text>`,
    `<text x="${P + 2}" y="${y(0) - 3}" font-size="9" fill="#8a949e">0%</text>`];
  let run = [];
  const flush = () => {
    if (run.length > 1) parts.push(`<polyline fill="none" stroke="#17324d" stroke-width="2" points="${run.join(" ")}"/>`);
    run = [];
  };
  days.forEach((d, i) => {
    if (d.rate === null || d.rate === undefined) { flush(); return; }
    run.push(`${x(i).toFixed(1)},${y(d.rate).toFixed(1)}`);
    parts.push(`<circle class="day" cx="${x(i).toFixed(1)}" cy="${y(d.rate).toFixed(1)}" r="2.5" fill="#17324d"><title>${esc(d.day)} ${pct(d.rate)}</title></circle>`);
  });
  flush();
  svg.innerHTML = parts.join("");
  const last = known[known.length - 1];
  $("#trend-note").textContent = days.length
    ? `${days[0].day} – ${days[days.length - 1].day}` + (last ? ` · latest ${pct(last.rate)}` : " · no status known yet")
    : "";
}

// --- loading ------------------------------------------------------------------------------------------------

let first = true;
let pointsAt = -Infinity;
const POINTS_MS = 5 * 60000;

async function refresh() {
  try {
    // The first read alone: a closed server answers 401 once and the key is asked for once.
    const evs = await api("/api/v1/events?limit=30");
    // the points (about 3 MB at 100,000 cameras) every 5 minutes: statuses change at the sweeps' pace
    const pts = Date.now() - pointsAt >= POINTS_MS ? await api("/api/v1/dashboard/points") : null;
    const from = new Date(Date.now() - (days - 1) * 86400000).toISOString().slice(0, 10);
    const problems = [];
    const optional = (path) => api(path, { optional: true }).catch((err) => { problems.push(err.message); return null; });
    const [sum, ind, quality] = await Promise.all([
      optional("/api/v1/coverage/summary"),
      optional(`/api/v1/coverage/indicators?from=${from}`),
      optional("/api/v1/quality"),
    ]);
    if (pts) {
      points.setData(pts);
      legend(pts);
      pointsAt = Date.now();
    }
    if (first) {
      const n = await loadRegions();
      fitMap(n, points.data);
      first = false;
    }
    showIndicators(sum, ind, quality);
    showRegions(sum, ind);
    showEvents(evs.items);
    showTrend(ind && Array.isArray(ind.series) ? ind.series.map((d) => ({ day: d.day, rate: d.online_rate })) : []);
    $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
    $("#message").textContent = problems.length ? "coverage statistics: " + problems[0] : "";
    document.body.dataset.state = "ready";
  } catch (err) {
    $("#message").textContent = err.message;
    document.body.dataset.state = "error";
  }
}

$("#t-regions").addEventListener("click", (ev) => {
  const tr = ev.target.closest("tr[data-code]");
  const b = tr && regionBounds[tr.dataset.code];
  if (b) map.fitBounds(b, { padding: [10, 10] });
});
$("#key-button").addEventListener("click", () => askForKey("").then(() => { pointsAt = -Infinity; refresh(); }));
$("#key-forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); $("#key-input").value = ""; });

refresh();
setInterval(() => { if (document.body.dataset.state !== "key") refresh(); }, REFRESH_MS);
