// featurestore UI: the little JavaScript the pages use. No dependencies.
"use strict";

// Catalog: filter the rows as the user types (Enter still searches on the server).
function filterCatalog(input) {
  const needle = input.value.trim().toLowerCase();
  for (const row of document.querySelectorAll("tr.entry")) {
    const hit = !needle || row.dataset.search.includes(needle);
    row.classList.toggle("hidden", !hit);
  }
  for (const group of document.querySelectorAll("section.group")) {
    const shown = group.querySelectorAll("tr.entry:not(.hidden)").length;
    const small = group.querySelector("h2 small");
    if (small) small.textContent = String(shown);
  }
}

// Lineage: light up a node's edges and neighbours on hover or focus.
function lightUp(svg, id, on) {
  for (const edge of svg.querySelectorAll("path.edge")) {
    const touches = edge.dataset.from === id || edge.dataset.to === id;
    edge.classList.toggle("on", on && touches);
    if (on && touches) {
      const other = edge.dataset.from === id ? edge.dataset.to : edge.dataset.from;
      const node = svg.querySelector(`[data-id="${CSS.escape(other)}"]`);
      if (node) node.classList.add("on");
    }
  }
  if (!on) for (const n of svg.querySelectorAll(".node.on")) n.classList.remove("on");
}

document.addEventListener("DOMContentLoaded", () => {
  const search = document.getElementById("search");
  if (search && document.querySelector("section.group")) {
    search.addEventListener("input", () => filterCatalog(search));
  }
  const svg = document.getElementById("lineage");
  if (svg) {
    for (const node of svg.querySelectorAll(".node")) {
      const id = node.dataset.id;
      for (const [ev, on] of [["mouseenter", true], ["mouseleave", false], ["focus", true], ["blur", false]]) {
        node.addEventListener(ev, () => lightUp(svg, id, on));
      }
    }
    const target = decodeURIComponent(location.hash.slice(1));
    if (target) lightUp(svg, target, true);
  }
});
