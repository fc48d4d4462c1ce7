/* crmwatch dashboard: draws the reports' JSON (team table, charts, funnel), refreshes every minute
 * while the page is visible. Authenticated by a link secret or a session in data-auth / #s=. */
(function () {
  'use strict';
  var root = document.getElementById('crmwatch-dashboard');
  var T = JSON.parse(document.getElementById('crmwatch-strings').textContent);
  var auth = root.getAttribute('data-auth');
  if (!auth) {
    var m = /(?:^|[#&])s=([^&]+)/.exec(window.location.hash || '');
    auth = m ? 'Bearer ' + decodeURIComponent(m[1]) : '';
  }
  var state = { period: 'today', from: null, to: null, pipeline: null, sort: { key: 'open_findings_total', dir: -1 },
                managers: null, meta: null };
  // A period in the page's own address (?period=this_week, or ?from=&to=) opens the page on it.
  var params = new URLSearchParams(window.location.search);
  if (params.get('from') && params.get('to')) {
    state.period = 'custom'; state.from = params.get('from'); state.to = params.get('to');
  } else if (params.get('period')) { state.period = params.get('period'); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === 'text') { node.textContent = attrs[k]; } else if (k === 'on') {
        Object.keys(attrs.on).forEach(function (ev) { node.addEventListener(ev, attrs.on[ev]); });
      } else { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { if (c) { node.appendChild(c); } });
    return node;
  }

  function query(extra) {
    var q = ['lang=' + T.lang];
    if (state.period === 'custom' && state.from && state.to) { q.push('from=' + state.from, 'to=' + state.to); }
    else if (state.period !== 'custom') { q.push('period=' + state.period); }
    Object.keys(extra || {}).forEach(function (k) { if (extra[k] != null) { q.push(k + '=' + encodeURIComponent(extra[k])); } });
    return '?' + q.join('&');
  }

  function get(path, extra) {
    return fetch('/dashboard/api/' + path + query(extra), { headers: { 'Authorization': auth } }).then(function (r) {
      if (r.status === 401) { throw new Error('expired'); }
      if (!r.ok) { throw new Error('http ' + r.status); }
      return r;
    });
  }
  function getJson(path, extra) { return get(path, extra).then(function (r) { return r.json(); }); }

  function num(v) { return v == null ? '—' : Number(v).toLocaleString(T.lang === 'ru' ? 'ru-RU' : 'en-US'); }
  function pct(v) { return v == null ? '—' : Math.round(v * 1000) / 10 + ' %'; }
  function talk(sec) {
    var h = Math.floor(sec / 3600), mnt = Math.floor((sec % 3600) / 60), s = sec % 60;
    return h ? h + ' ' + T.h + ' ' + mnt + ' ' + T.min : (mnt ? mnt + ' ' + T.min + ' ' + s + ' ' + T.sec : s + ' ' + T.sec);
  }

  // -- the team table --------------------------------------------------------------------------
  var COLUMNS = [
    { key: 'name', label: T.manager, text: true },
    { key: 'calls', label: T.calls }, { key: 'talk_seconds', label: T.talk, fmt: talk },
    { key: 'successful_calls', label: T.successful }, { key: 'incoming', label: T.incoming },
    { key: 'outgoing', label: T.outgoing }, { key: 'missed', label: T.missed, bad: true },
    { key: 'cards_changed', label: T.cards },
    { key: 'calls_not_written', label: T.calls_vs_cards, bad: true, flag: 'calls_vs_cards_flag' },
    { key: 'overdue_tasks', label: T.overdue, bad: true }, { key: 'deals_without_task', label: T.without_task, bad: true },
    { key: 'tasks_per_deal', label: T.ratio }, { key: 'tasks_moved_without_contact', label: T.moved, bad: true },
    { key: 'open_findings_total', label: T.findings, bad: true, drill: true }
  ];

  function heat(value, max) {
    // The worst rows stand out without reading numbers: red grows with the share of the column's maximum.
    if (!value || !max) { return ''; }
    return 'background: rgba(220, 38, 38, ' + (0.12 + 0.5 * value / max).toFixed(2) + ')';
  }

  function renderTable(report) {
    var box = document.getElementById('cw-team');
    box.textContent = '';
    if (!report.items.length) { box.appendChild(el('p', { text: T.no_data })); return; }
    var items = report.items.slice();
    var s = state.sort;
    items.sort(function (a, b) {
      var x = a[s.key], y = b[s.key];
      if (typeof x === 'string') { return s.dir * x.localeCompare(y); }
      return s.dir * ((x == null ? -1 : x) - (y == null ? -1 : y));
    });
    var max = {};
    COLUMNS.forEach(function (c) { if (c.bad) { max[c.key] = Math.max.apply(null, items.map(function (i) { return i[c.key] || 0; })); } });
    var head = el('tr', {}, COLUMNS.map(function (c) {
      var th = el('th', { 'data-key': c.key, scope: 'col', text: c.label,
                          on: { click: function () { state.sort = { key: c.key, dir: state.sort.key === c.key ? -state.sort.dir : (c.text ? 1 : -1) }; renderTable(state.managers); } } });
      if (s.key === c.key) { th.setAttribute('aria-sort', s.dir > 0 ? 'ascending' : 'descending'); }
      return th;
    }));
    var rows = items.map(function (item) {
      return el('tr', { 'data-manager': item.manager_id }, COLUMNS.map(function (c) {
        var v = item[c.key];
        var td = el('td', { 'data-key': c.key });
        if (c.bad) { td.setAttribute('style', heat(v, max[c.key])); if (v) { td.className = 'cw-hot'; } }
        if (c.flag && item[c.flag]) { td.className += ' cw-flag'; td.title = T.flag_calls; }
        if (c.drill && v) {
          td.appendChild(el('button', { 'class': 'cw-link', text: num(v), title: rulesTitle(item.open_findings),
                                        on: { click: function () { drill(item.manager_id, null, item.name); } } }));
        } else { td.textContent = c.text ? v : (c.fmt ? c.fmt(v || 0) : num(v)); }
        return td;
      }));
    });
    var t = report.totals;
    var total = el('tr', { 'class': 'cw-total' }, COLUMNS.map(function (c) {
      return el('td', { 'data-key': c.key, text: c.text ? T.total : (c.fmt ? c.fmt(t[c.key] || 0) : num(t[c.key])) });
    }));
    box.appendChild(el('div', { 'class': 'cw-scroll' }, [el('table', { id: 'cw-team-table' },
      [el('thead', {}, [head]), el('tbody', {}, rows.concat([total]))])]));
    // Findings by rule, each count a way to the deals behind it.
    var rules = Object.keys(report.totals.open_findings).sort();
    if (rules.length) {
      var rhead = el('tr', {}, [el('th', { text: T.manager })].concat(rules.map(function (r) { return el('th', { text: T.rules[r] || r }); })));
      var rrows = items.map(function (item) {
        return el('tr', { 'data-manager': item.manager_id }, [el('td', { text: item.name })].concat(rules.map(function (r) {
          var n = item.open_findings[r] || 0;
          var td = el('td', { 'data-rule': r });
          if (n) {
            td.appendChild(el('button', { 'class': 'cw-link', text: num(n),
                                          on: { click: function () { drill(item.manager_id, r, item.name); } } }));
          } else { td.textContent = '0'; }
          return td;
        })));
      });
      box.appendChild(el('h2', { text: T.findings, style: 'margin-top:14px' }));
      box.appendChild(el('div', { 'class': 'cw-scroll' }, [el('table', { id: 'cw-rules-table' }, [el('thead', {}, [rhead]), el('tbody', {}, rrows)])]));
    }
  }

  function rulesTitle(map) {
    return Object.keys(map).map(function (r) { return (T.rules[r] || r) + ': ' + map[r]; }).join('\n');
  }

  function drill(managerId, rule, name) {
    getJson('deals', { manager_id: managerId, rule: rule }).then(function (deals) {
      var close = el('button', { text: T.close, on: { click: function () { overlay.remove(); } } });
      var rows = deals.map(function (d) {
        return el('tr', { 'data-deal': d.deal_id }, [
          el('td', { text: d.name || ('#' + d.deal_id) }), el('td', { text: d.stage_name || '' }), el('td', { text: num(d.price) }),
          el('td', { text: d.rules.map(function (r) { return T.rules[r] || r; }).join(', ') }),
          el('td', {}, [el('a', { href: d.url, target: '_blank', rel: 'noopener', 'class': 'cw-crm-link', text: T.open_in_crm })])
        ]);
      });
      var title = T.deals + ': ' + name + (rule ? ' — ' + (T.rules[rule] || rule) : '');
      var overlay = el('div', { 'class': 'cw-drill', id: 'cw-drill', on: { click: function (e) { if (e.target === overlay) { overlay.remove(); } } } }, [
        el('div', {}, [el('h2', { text: title }), el('table', { id: 'cw-deals-table' }, [
          el('thead', {}, [el('tr', {}, [T.deal, T.stage, T.amount, T.findings, ''].map(function (h) { return el('th', { text: h }); }))]),
          el('tbody', {}, rows)]), close])]);
      document.body.appendChild(overlay);
    }).catch(showError);
  }

  // -- charts ----------------------------------------------------------------------------------
  function chart(id, traces, title, barmode) {
    var layout = { title: { text: title, font: { size: 14 } }, margin: { l: 40, r: 10, t: 40, b: 40 }, barmode: barmode || 'group',
                   legend: { orientation: 'h' }, height: 300, xaxis: { type: 'category' }, yaxis: { rangemode: 'tozero' } };
    window.Plotly.react(id, traces, layout, { displaylogo: false, responsive: true, modeBarButtonsToRemove: ['toImage'] });
  }

  function renderCharts(trend) {
    var days = trend.days;
    var calls = [];
    trend.calls.forEach(function (m) {
      calls.push({ type: 'bar', name: m.name, x: days, y: m.calls });
      calls.push({ type: 'scatter', mode: 'lines+markers', name: m.name + ' — ' + T.successful_short, x: days, y: m.successful_calls });
    });
    chart('cw-chart-calls', calls, T.chart_calls);
    chart('cw-chart-findings', [{ type: 'bar', name: T.opened, x: days, y: trend.findings.opened, marker: { color: '#dc2626' } },
                                { type: 'bar', name: T.resolved, x: days, y: trend.findings.resolved, marker: { color: '#16a34a' } },
                                { type: 'bar', name: T.expired_findings, x: days, y: trend.findings.expired, marker: { color: '#9ca3af' } }],
          T.chart_findings);
    chart('cw-chart-rules', Object.keys(trend.open_by_rule).map(function (r) {
      return { type: 'scatter', mode: 'lines+markers', name: T.rules[r] || r, x: days, y: trend.open_by_rule[r] };
    }), T.chart_rules);
  }

  // -- funnel ----------------------------------------------------------------------------------
  function renderFunnel(f) {
    var box = document.getElementById('cw-funnel-body');
    box.textContent = '';
    var kpi = function (label, value, key) { return el('div', { 'class': 'cw-kpi', 'data-key': key }, [el('span', { text: label }), el('b', { text: value })]); };
    box.appendChild(el('div', { 'class': 'cw-kpis' }, [
      kpi(T.won, num(f.won), 'won'), kpi(T.lost, num(f.lost), 'lost'), kpi(T.conversion, pct(f.conversion), 'conversion'),
      kpi(T.avg_deal, num(f.avg_deal_size), 'avg_deal_size'), kpi(T.funnel_days, num(f.avg_funnel_working_days), 'avg_funnel_working_days'),
      kpi(T.new_clients, pct(f.by_client.new.conversion), 'new'), kpi(T.returning_clients, pct(f.by_client.returning.conversion), 'returning')]));
    var head = el('tr', {}, [T.stage, T.open_deals, T.amount, T.avg_days, T.stage_conversion].map(function (h) { return el('th', { text: h }); }));
    var rows = f.stages.map(function (st) {
      return el('tr', { 'data-stage': st.stage_id }, [el('td', { text: st.name }), el('td', { 'data-key': 'open_deals', text: num(st.open_deals) }),
        el('td', { 'data-key': 'amount', text: num(st.amount) }), el('td', { 'data-key': 'avg_working_days', text: num(st.avg_working_days) }),
        el('td', { text: pct(st.stage_conversion) })]);
    });
    box.appendChild(el('div', { 'class': 'cw-scroll' }, [el('table', { id: 'cw-funnel-table' }, [el('thead', {}, [head]), el('tbody', {}, rows)])]));
    if (f.by_manager.length) {
      var mh = el('tr', {}, [T.manager, T.open_deals, T.amount, T.won, T.lost, T.conversion, T.avg_deal, T.bottleneck].map(function (h) { return el('th', { text: h }); }));
      var mr = f.by_manager.map(function (m) {
        return el('tr', { 'data-manager': m.manager_id }, [el('td', { text: m.name }), el('td', { text: num(m.open_deals) }), el('td', { text: num(m.amount) }),
          el('td', { text: num(m.won) }), el('td', { text: num(m.lost) }), el('td', { text: pct(m.conversion) }),
          el('td', { text: num(m.avg_deal_size) }), el('td', { text: m.bottleneck_stage_name || '—' })]);
      });
      box.appendChild(el('div', { 'class': 'cw-scroll', style: 'margin-top:12px' }, [el('table', { id: 'cw-funnel-managers' }, [el('thead', {}, [mh]), el('tbody', {}, mr)])]));
    }
  }

  // -- frame, loading, refresh -------------------------------------------------------------------
  function showError(err) {
    var box = document.getElementById('cw-status');
    box.className = 'cw-error';
    box.textContent = err && err.message === 'expired' ? T.expired : T.error;
  }

  function download(fmt) {
    get('managers', { format: fmt }).then(function (r) { return r.blob(); }).then(function (blob) {
      var a = el('a', { href: URL.createObjectURL(blob), download: 'crmwatch-managers.' + fmt });
      document.body.appendChild(a); a.click(); a.remove();
    }).catch(showError);
  }

  function load() {
    return Promise.all([getJson('managers'), getJson('trend'), getJson('funnel', { pipeline_id: state.pipeline })]).then(function (res) {
      state.managers = res[0];
      renderTable(res[0]);
      renderCharts(res[1]);
      renderFunnel(res[2]);
      var box = document.getElementById('cw-status');
      box.className = 'cw-status';
      box.textContent = T.updated + ' ' + new Date().toLocaleTimeString(T.lang === 'ru' ? 'ru-RU' : 'en-US');
      root.setAttribute('data-loaded', String(Date.now()));
    }).catch(showError);
  }

  function build(meta) {
    state.meta = meta;
    var presets = ['today', 'yesterday', 'this_week', 'last_week', 'this_month', 'last_month', 'custom'];
    var sel = el('select', { id: 'cw-period', 'aria-label': T.period }, presets.map(function (p) { return el('option', { value: p, text: T[p] }); }));
    sel.value = state.period;
    var from = el('input', { type: 'date', id: 'cw-from' });
    var to = el('input', { type: 'date', id: 'cw-to' });
    from.value = state.from || ''; to.value = state.to || '';
    from.hidden = to.hidden = state.period !== 'custom';
    sel.addEventListener('change', function () {
      state.period = sel.value;
      var custom = sel.value === 'custom';
      from.hidden = to.hidden = !custom;
      if (!custom) { load(); }
    });
    var apply = el('button', { text: T.apply, on: { click: function () { state.from = from.value; state.to = to.value; load(); } } });
    var pipe = el('select', { id: 'cw-pipeline', 'aria-label': T.pipeline }, meta.pipelines.map(function (p) { return el('option', { value: p.id, text: p.name }); }));
    state.pipeline = meta.pipelines.length ? meta.pipelines[0].id : null;
    pipe.addEventListener('change', function () { state.pipeline = pipe.value; load(); });
    root.appendChild(el('h1', { text: T.title + ' — ' + meta.account }));
    root.appendChild(el('p', { 'class': 'cw-sub', text: meta.team_view ? T.team_view : T.self_view }));
    root.appendChild(el('div', { 'class': 'cw-bar' }, [sel, from, to, apply,
      el('button', { id: 'cw-export-xlsx', text: T.export + ' XLSX', on: { click: function () { download('xlsx'); } } }),
      el('button', { id: 'cw-export-csv', text: T.export + ' CSV', on: { click: function () { download('csv'); } } }),
      el('span', { id: 'cw-status', 'class': 'cw-status', text: T.loading })]));
    root.appendChild(el('section', {}, [el('h2', { text: T.team }), el('div', { id: 'cw-team' })]));
    root.appendChild(el('section', {}, [el('h2', { text: T.charts }), el('div', { 'class': 'cw-charts' }, [
      el('div', { id: 'cw-chart-calls', 'class': 'cw-chart' }), el('div', { id: 'cw-chart-findings', 'class': 'cw-chart' }),
      el('div', { id: 'cw-chart-rules', 'class': 'cw-chart' })])]));
    root.appendChild(el('section', {}, [el('h2', { text: T.funnel }), el('div', { 'class': 'cw-bar' }, [pipe]), el('div', { id: 'cw-funnel-body' })]));
    load();
    // Fresh figures every minute, only while someone can see them.
    window.setInterval(function () { if (document.visibilityState === 'visible') { load(); } }, 60000);
    document.addEventListener('visibilitychange', function () { if (document.visibilityState === 'visible') { load(); } });
  }

  fetch('/dashboard/api/meta?lang=' + T.lang, { headers: { 'Authorization': auth } }).then(function (r) {
    if (!r.ok) { throw new Error(r.status === 401 ? 'expired' : 'http'); }
    return r.json();
  }).then(build).catch(function (err) {
    root.appendChild(el('div', { id: 'cw-status', 'class': 'cw-error', text: err.message === 'expired' ? T.expired : T.error }));
  });
  window.crmwatchDashboard = { reload: load, state: state };
}());
