// The seller page: asks the campaigns API (the same one the SaaS calls) for the plan at
// the chosen budget and draws it. No framework and nothing from a CDN; all text goes
// through textContent, so no value from the API is ever parsed as HTML.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const seller = document.body.dataset.seller;
  const base = "/v1/sellers/" + encodeURIComponent(seller) + "/campaigns";
  const $ = (id) => document.getElementById(id);
  const money = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2, minimumFractionDigits: 2 });
  const count = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  let rangeMax = null; // the slider's scale: the unlimited plan's spend

  function query() {
    const params = new URLSearchParams();
    const budget = $("budget").value.trim();
    if (budget !== "") params.set("budget", budget);
    params.set("audience", $("audience").value);
    return params;
  }

  async function load() {
    const params = query();
    $("status").textContent = "computing…";
    $("error").hidden = true;
    history.replaceState(null, "", "?" + params.toString());
    let response;
    try {
      response = await fetch(base + "?" + params.toString(), { credentials: "same-origin" });
    } catch (err) {
      return fail("the server could not be reached: " + err);
    }
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = JSON.stringify((await response.json()).detail); } catch (e) { /* not JSON */ }
      if (response.status === 401 || response.status === 403) {
        return fail("not allowed (" + response.status + "): " + detail + " — sign in again");
      }
      return fail("the plan could not be computed (" + response.status + "): " + detail);
    }
    const plan = await response.json();
    render(plan, params);
    $("status").textContent = "plan for " + (plan.budget === null ? "no budget limit" : "a budget of " + money.format(plan.budget))
      + " (" + plan.campaigns.length + " campaigns)";
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  }

  // The measured lift: treated buyers vs the seller's holdout (the latest report).
  const METRIC_LABELS = { purchase_rate: "Purchase rate", revenue: "Revenue per buyer", profit: "Profit per buyer" };

  async function loadLift() {
    const path = "/v1/sellers/" + encodeURIComponent(seller) + "/incrementality";
    let lift;
    try {
      const response = await fetch(path, { credentials: "same-origin" });
      if (!response.ok) { $("lift-note").textContent = "measured lift unavailable (" + response.status + ")"; return; }
      lift = await response.json();
    } catch (err) {
      $("lift-note").textContent = "measured lift unavailable: " + err;
      return;
    }
    if (!lift.available) {
      $("lift").replaceChildren();
      $("lift-note").textContent = lift.detail || "no measured lift yet";
      document.body.dataset.lift = "none";
      return;
    }
    const pct = Math.round(100 * lift.level);
    const fmt = (m, v) => v === null ? "n/a" : m === "purchase_rate" ? (100 * v).toFixed(2) + " pts" : money.format(v);
    $("lift").replaceChildren(...lift.figures.map((f) => card(
      METRIC_LABELS[f.metric] || f.metric,
      (f.lift !== null && f.lift >= 0 ? "+" : "") + fmt(f.metric, f.lift),
      pct + "% interval " + fmt(f.metric, f.low) + " to " + fmt(f.metric, f.high)
        + " · treated " + f.n_treated + ", holdout " + f.n_control + " buyers",
      "lift-" + f.metric,
    )));
    const profit = lift.figures.find((f) => f.metric === "profit");
    if (profit && profit.lift !== null) {
      barChart($("lift-chart"), [
        { label: "treated buyers", value: profit.treated, low: profit.treated, high: profit.treated },
        { label: "holdout buyers", value: profit.control, low: profit.control, high: profit.control },
        { label: "lift (" + pct + "% interval)", value: profit.lift, low: profit.low, high: profit.high, plan: true },
      ], "bar-pos");
    }
    $("lift-note").textContent = "Profit per buyer over " + lift.window_days + " days after the first decision; "
      + "holdout buyers got no offer. Report of " + (lift.generated_at || "unknown date") + ".";
    document.body.dataset.lift = "shown";
  }

  function fail(message) {
    $("error").textContent = message;
    $("error").hidden = false;
    $("status").textContent = "";
  }

  function render(plan, params) {
    const planRow = plan.comparison.find((c) => c.kind === "plan");
    if (rangeMax === null || plan.budget === null) {
      rangeMax = Math.max(1, Math.ceil(planRow.spend * 1.2));
      $("budget-range").max = String(rangeMax);
      $("budget-range").step = String(Math.max(rangeMax / 200, 0.01));
    }
    $("budget-range").value = plan.budget === null ? String(rangeMax) : String(plan.budget);
    summary(plan, planRow);
    campaigns(plan, params);
    comparison(plan);
    barChart($("profit-chart"), plan.campaigns.map((c) => ({
      label: c.audience + " · " + c.offer_id, value: c.profit, low: c.profit_low, high: c.profit_high,
    })), "bar-pos");
    barChart($("comparison-chart"), plan.comparison.map((c) => ({
      label: c.kind === "coupon_to_all" ? "to all: " + c.offer_id + " (" + c.tool + ")" : c.name,
      value: c.profit, low: c.profit_low, high: c.profit_high, plan: c.kind === "plan",
    })), "bar-pos");
    gainChart($("gain-chart"), plan.gain_curve, planRow.buyers / Math.max(plan.buyers, 1));
    const skipped = $("skipped");
    skipped.replaceChildren(...plan.not_recommended.map((text) => el("li", text)));
    $("skipped-section").hidden = plan.not_recommended.length === 0;
  }

  function summary(plan, row) {
    const best = plan.comparison.filter((c) => c.kind === "coupon_to_all")
      .sort((a, b) => b.profit - a.profit)[0];
    const cards = [
      card("Expected profit", money.format(row.profit), "range " + money.format(row.profit_low) + " to " + money.format(row.profit_high), "plan-profit"),
      card("Spend", money.format(row.spend), plan.budget === null ? "no budget limit" : "of a budget of " + money.format(plan.budget), "plan-spend"),
      card("Buyers targeted", count.format(row.buyers), "of " + count.format(plan.buyers) + " buyers", "plan-buyers"),
      card("Incremental orders", count.format(row.incremental_orders), "revenue " + money.format(row.incremental_revenue), "plan-orders"),
      card("ROI", row.roi === null ? "—" : count.format(row.roi) + "×", row.roi === null ? "costs nothing" : "range " + count.format(row.roi_low) + "× to " + count.format(row.roi_high) + "×", "plan-roi"),
    ];
    if (best) {
      cards.push(card("Best coupon to everyone", money.format(best.profit), best.offer_id + " (" + best.tool + "), spend " + money.format(best.spend), "best-blanket"));
    }
    $("summary").replaceChildren(...cards);
    const basis = plan.budget_basis === "worst_case"
      ? "Spend counts every offer as if it were used (worst case), so the budget can never be overrun."
      : "Spend is the expected discount cost (each offer's cost times its chance of use) plus sending costs.";
    const price = plan.shadow_price > 0
      ? " The budget binds: one more unit of budget would add about " + money.format(plan.shadow_price) + " of expected profit."
      : "";
    $("basis").textContent = basis + price + " Model version " + plan.model_version + ", offers valid at " + plan.as_of + ".";
  }

  function card(label, value, detail, id) {
    const box = el("div", null, "card");
    box.id = id;
    box.append(el("div", label, "label"), el("div", value, "value"), el("div", detail, "range"));
    return box;
  }

  function campaigns(plan, params) {
    const body = $("campaigns").querySelector("tbody");
    body.replaceChildren(...plan.campaigns.map((c) => {
      const link = el("a", "CSV (" + c.buyers + ")");
      link.href = base + "/" + encodeURIComponent(c.campaign_id) + "/targets.csv?" + params.toString();
      link.setAttribute("download", "");
      link.className = "csv";
      const tr = el("tr");
      tr.dataset.campaign = c.campaign_id;
      tr.append(
        el("td", c.audience, "text"),
        el("td", c.offer_id + " (" + c.tool + ")", "text"),
        el("td", c.buyers + " of " + c.audience_size),
        el("td", count.format(c.incremental_orders)),
        el("td", money.format(c.incremental_revenue)),
        el("td", money.format(c.discount_cost)),
        el("td", money.format(c.spend)),
        el("td", money.format(c.profit) + " (" + money.format(c.profit_low) + " to " + money.format(c.profit_high) + ")", c.profit >= 0 ? "pos" : "neg"),
        el("td", c.roi === null ? "—" : count.format(c.roi) + "×"),
        cell(link),
      );
      return tr;
    }));
    $("no-campaigns").hidden = plan.campaigns.length > 0;
  }

  function comparison(plan) {
    const body = $("comparison").querySelector("tbody");
    body.replaceChildren(...plan.comparison.map((c) => {
      const tr = el("tr");
      tr.dataset.kind = c.kind;
      tr.append(
        el("td", c.kind === "coupon_to_all" ? "coupon to every customer: " + c.offer_id + " (" + c.tool + ")" : c.name, "text"),
        el("td", String(c.buyers)),
        el("td", count.format(c.incremental_orders)),
        el("td", money.format(c.discount_cost)),
        el("td", money.format(c.spend)),
        el("td", money.format(c.profit) + " (" + money.format(c.profit_low) + " to " + money.format(c.profit_high) + ")", c.profit >= 0 ? "pos" : "neg"),
        el("td", c.roi === null ? "—" : count.format(c.roi) + "×"),
        el("td", c.within_budget ? "yes" : "no"),
      );
      return tr;
    }));
  }

  // ------------------------------------------------------------------ charts (plain SVG)

  function barChart(svg, rows, cls) {
    const rowH = 22, left = 190, right = 16, width = 480, top = 10;
    const height = top + rows.length * rowH + 24;
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    const lo = Math.min(0, ...rows.map((r) => r.low)), hi = Math.max(0, ...rows.map((r) => r.high));
    const span = hi - lo || 1;
    const x = (v) => left + ((v - lo) / span) * (width - left - right);
    const parts = [line(x(0), top - 4, x(0), top + rows.length * rowH, "axis")];
    rows.forEach((r, i) => {
      const y = top + i * rowH;
      const bar = svgEl("rect", {
        x: Math.min(x(0), x(r.value)), y: y + 3, width: Math.max(1, Math.abs(x(r.value) - x(0))), height: rowH - 8,
        class: r.plan ? "bar-plan" : r.value >= 0 ? cls : "bar-neg",
      });
      bar.append(svgEl("title", {}, r.label + ": " + money.format(r.value)));
      parts.push(
        text(left - 6, y + rowH / 2 + 3, truncate(r.label, 30), "end"),
        bar,
        line(x(r.low), y + rowH / 2, x(r.high), y + rowH / 2, "whisker"),
      );
    });
    const axisY = top + rows.length * rowH + 14;
    parts.push(text(x(lo), axisY, money.format(lo), "start"), text(x(hi), axisY, money.format(hi), "end"));
    svg.replaceChildren(...parts);
  }

  function gainChart(svg, points, targetedShare) {
    const w = 420, h = 300, pad = 36;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    const x = (v) => pad + v * (w - 2 * pad), y = (v) => h - pad - v * (h - 2 * pad);
    const parts = [
      line(x(0), y(0), x(1), y(0), "axis"), line(x(0), y(0), x(0), y(1), "axis"),
      line(x(0), y(0), x(1), y(1), "diagonal"),
      text(x(0.5), h - 6, "share of buyers targeted", "middle"),
      text(12, y(0.5), "share of expected redemptions", "middle", "rotate(-90 12 " + y(0.5) + ")"),
      text(x(0), y(0) + 14, "0", "middle"), text(x(1), y(0) + 14, "100%", "middle"),
      text(x(0) - 4, y(1) + 4, "100%", "end"),
    ];
    if (points.length) {
      const d = points.map((p, i) => (i ? "L" : "M") + x(p.share_targeted).toFixed(1) + " " + y(p.share_redemptions).toFixed(1)).join(" ");
      parts.push(svgEl("path", { d: d, class: "curve" }));
      const at = interpolate(points, targetedShare);
      const mark = svgEl("circle", { cx: x(targetedShare), cy: y(at), r: 4, class: "mark" });
      mark.append(svgEl("title", {}, "the plan targets " + (100 * targetedShare).toFixed(1) + "% of buyers"));
      parts.push(mark, text(x(targetedShare) + 6, y(at) + 14, "plan", "start"));
    }
    svg.replaceChildren(...parts);
  }

  function interpolate(points, share) {
    for (let i = 1; i < points.length; i++) {
      const a = points[i - 1], b = points[i];
      if (share <= b.share_targeted) {
        const t = (share - a.share_targeted) / ((b.share_targeted - a.share_targeted) || 1);
        return a.share_redemptions + t * (b.share_redemptions - a.share_redemptions);
      }
    }
    return points[points.length - 1].share_redemptions;
  }

  // ------------------------------------------------------------------ small DOM helpers

  function el(tag, content, cls) {
    const node = document.createElement(tag);
    if (content !== undefined && content !== null) node.textContent = content;
    if (cls) node.className = cls;
    return node;
  }
  function cell(child) { const td = el("td"); td.append(child); return td; }
  function svgEl(tag, attrs, content) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (content !== undefined) node.textContent = content;
    return node;
  }
  function line(x1, y1, x2, y2, cls) { return svgEl("line", { x1, y1, x2, y2, class: cls }); }
  function text(x, y, content, anchor, transform) {
    const attrs = { x, y, "text-anchor": anchor };
    if (transform) attrs.transform = transform;
    return svgEl("text", attrs, content);
  }
  function truncate(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }

  // ------------------------------------------------------------------ wiring

  const initial = new URLSearchParams(location.search);
  if (initial.has("budget")) $("budget").value = initial.get("budget");
  if (initial.get("audience") === "taste") $("audience").value = "taste";
  $("controls").addEventListener("submit", (event) => { event.preventDefault(); load(); });
  $("audience").addEventListener("change", load);
  $("budget-range").addEventListener("input", () => { $("budget").value = $("budget-range").value; });
  $("budget-range").addEventListener("change", load);
  load();
  loadLift();
})();
