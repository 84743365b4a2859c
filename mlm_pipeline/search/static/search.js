// The search page: sends a text or an image to /api/search and draws the answer.
// Map frame: equirectangular, x = lon + 180, y = 90 - lat (the frame of /map/world.svg).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

function shape(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

const x = (lon) => lon + 180;
const y = (lat) => 90 - lat;

function drawCell(overlay, cell, opacity) {
  const xs = cell.polygon.map(([lon]) => x(lon));
  const points = cell.polygon.map(([lon, lat]) => `${x(lon).toFixed(2)},${y(lat).toFixed(2)}`).join(" ");
  // A cell across the antimeridian has unwrapped longitudes: draw it once more, shifted by 360.
  const shifts = [0];
  if (Math.min(...xs) < 0) shifts.push(360);
  if (Math.max(...xs) > 360) shifts.push(-360);
  for (const shift of shifts) {
    const polygon = shape("polygon", { class: "cell", points, "fill-opacity": opacity, transform: `translate(${shift} 0)` });
    const title = shape("title", {});
    title.textContent = `${cell.token}: ${(100 * cell.probability).toFixed(1)} %`;
    polygon.appendChild(title);
    overlay.appendChild(polygon);
  }
}

// Zoom to the cells and points drawn, with a margin, at the map's 2:1 shape (at least 40 x 20 degrees).
function zoomTo(points) {
  const xs = points.map(([px]) => px);
  const ys = points.map(([, py]) => py);
  let width = Math.max(40, 1.4 * (Math.max(...xs) - Math.min(...xs)), 2.8 * (Math.max(...ys) - Math.min(...ys)));
  width = Math.min(width, 360);
  const height = width / 2;
  const cx = (Math.max(...xs) + Math.min(...xs)) / 2;
  const cy = Math.min(Math.max((Math.max(...ys) + Math.min(...ys)) / 2, height / 2), 180 - height / 2);
  $("map").setAttribute("viewBox", `${(cx - width / 2).toFixed(2)} ${(cy - height / 2).toFixed(2)} ${width.toFixed(2)} ${height.toFixed(2)}`);
  return width;
}

function drawLocation(answer) {
  const overlay = $("overlay");
  overlay.replaceChildren();
  $("cells").replaceChildren();
  $("location-note").textContent = "";
  const location = answer.location;
  if (!location) {
    $("map").setAttribute("viewBox", "0 0 360 180");
    $("location-note").textContent = `${answer.model} has no location heads.`;
    return;
  }
  const top = location.cells[0].probability;
  for (const cell of [...location.cells].reverse()) drawCell(overlay, cell, (0.15 + 0.6 * cell.probability / top).toFixed(3));
  for (const cell of location.cells) {
    $("cells").appendChild(element("li", {}, `cell ${cell.token}: ${(100 * cell.probability).toFixed(1)} % (centre ${cell.lat.toFixed(2)}, ${cell.lon.toFixed(2)})`));
  }
  const item = answer.query.item;
  const seen = location.cells.flatMap((cell) => cell.polygon.map(([lon, lat]) => [x(lon), y(lat)]));
  seen.push([x(location.lon), y(location.lat)]);
  if (item) seen.push([x(item.lon), y(item.lat)]);
  const radius = zoomTo(seen) / 150;
  if (item) {
    overlay.appendChild(shape("line", { class: "error", x1: x(location.lon), y1: y(location.lat), x2: x(item.lon), y2: y(item.lat) }));
  }
  overlay.appendChild(shape("circle", { class: "predicted", cx: x(location.lon), cy: y(location.lat), r: radius }));
  if (item) overlay.appendChild(shape("circle", { class: "true", cx: x(item.lon), cy: y(item.lat), r: 0.9 * radius }));
  const estimate = `Estimate (white dot): ${location.lat.toFixed(2)}, ${location.lon.toFixed(2)}, the most probable cell's centre.`;
  $("location-note").textContent = item ? `${estimate} Red dot: the true position.` : estimate;
}

function describeQuery(answer, preview) {
  const box = $("query");
  box.replaceChildren();
  const query = answer.query;
  if (query.kind === "text") {
    box.appendChild(element("div", {}, `Text: “${query.text}”`));
  } else {
    if (preview) box.appendChild(element("img", { src: preview, alt: "your image" }));
    box.appendChild(element("div", {}, `Image: ${query.format}, ${query.width} × ${query.height} px`));
  }
  const item = query.item;
  if (item) {
    const where = `true position ${item.lat.toFixed(2)}, ${item.lon.toFixed(2)}`;
    const error = item.error_km === undefined ? "" : `; the estimate is ${item.error_km.toLocaleString("en")} km away`;
    const line = element("div", { class: "truth", id: "truth" });
    line.append(`This ${item.kind} is in the dataset: `);
    line.appendChild(element("a", { href: `/entity/${item.qid}` }, `${item.label} (${item.qid})`));
    line.append(`, ${where}${error}.`);
    box.appendChild(line);
  }
}

function showResults(answer) {
  const list = $("results");
  list.replaceChildren();
  const kind = answer.results.length ? answer.results[0].kind : "";
  $("results-title").textContent = kind === "image" ? "Images" : kind === "text" ? "Summaries" : "Results";
  for (const result of answer.results) {
    const card = element("article", { class: `result ${result.kind}` });
    card.appendChild(element("span", { class: "score" }, result.score.toFixed(3)));
    const link = element("a", { href: result.entity_url, class: "label" }, result.label);
    if (result.kind === "image") {
      card.appendChild(element("img", { src: result.image_url, alt: result.label, loading: "lazy" }));
      card.appendChild(link);
    } else {
      card.appendChild(element("span", { class: "lang" }, result.lang));
      card.appendChild(link);
      const text = result.text || "";
      card.appendChild(element("p", {}, text.length > 320 ? `${text.slice(0, 320)}…` : text));
    }
    list.appendChild(card);
  }
}

async function ask(request, preview) {
  $("error").textContent = "";
  document.body.setAttribute("aria-busy", "true");
  try {
    const response = await fetch(request.url, request.init);
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    describeQuery(answer, preview);
    showResults(answer);
    drawLocation(answer);
  } catch (error) {
    $("error").textContent = `Not searched: ${error.message}`;
  } finally {
    document.body.removeAttribute("aria-busy");
  }
}

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const params = new URLSearchParams({ text: $("text").value, k: $("k").value });
  ask({ url: `/api/search?${params}`, init: {} }, null);
});

$("image").addEventListener("change", () => {
  const file = $("image").files[0];
  if (!file) return;
  const params = new URLSearchParams({ k: $("k").value });
  const init = { method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } };
  ask({ url: `/api/search?${params}`, init }, URL.createObjectURL(file));
  $("image").value = "";
});

// The base map goes into the page's own SVG (not as an <image>), so it stays sharp when zoomed.
fetch("/map/world.svg").then((r) => r.text()).then((text) => {
  const world = new DOMParser().parseFromString(text, "image/svg+xml").documentElement;
  $("basemap").replaceChildren(...[...world.childNodes].map((node) => document.importNode(node, true)));
});

fetch("/api/health").then((r) => r.json()).then((health) => {
  $("release").textContent = `release ${health.release} · ${health.model} · ${health.images.toLocaleString("en")} images, ${health.texts.toLocaleString("en")} summaries`;
});
