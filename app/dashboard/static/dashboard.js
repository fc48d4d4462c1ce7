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

  // -- plan and pace ---------------------------------------------------------------------------
  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, k) { return values[k]; });
  }

  function paceBar(row) {
    // The fact's share of the month's target; the mark is where the pace says it should be by now.
    var track = el('div', { 'class': 'cw-pace' + (row.behind ? ' cw-pace-behind' : '') });
    if (row.target) {
      var done = Math.min(100, 100 * row.fact / row.target), due = Math.min(100, 100 * (row.expected || 0) / row.target);
      track.appendChild(el('div', { 'class': 'cw-pace-fill', style: 'width:' + done.toFixed(1) + '%' }));
      track.appendChild(el('div', { 'class': 'cw-pace-mark', style: 'left:' + due.toFixed(1) + '%', title: T.expected + ': ' + num(row.expected) }));
    }
    return track;
  }

  function renderPlan(p) {
    var box = document.getElementById('cw-plan-body');
    box.textContent = '';
    box.appendChild(el('p', { 'class': 'cw-hint', id: 'cw-plan-days',
                              text: fill(T.working_days, { done: num(p.working_days_elapsed), total: p.working_days }) }));
    if (!p.managers.length) { box.appendChild(el('p', { text: T.no_plan })); return; }
    var head = el('tr', {}, [T.manager, T.milestone_col, T.target, T.per_week, T.fact, T.expected, T.pace, T.behind]
      .map(function (h) { return el('th', { text: h }); }));
    var rows = [];
    p.managers.forEach(function (m) {
      var team = m.conversions.some(function (c) { return c.source === 'team'; });
      m.rows.forEach(function (r, i) {
        var cells = [];
        if (i === 0) {
          var who = el('td', { rowspan: String(m.rows.length), 'class': 'cw-plan-who' + (m.behind ? ' cw-hot' : '') }, [el('b', { text: m.name })]);
          if (team) { who.appendChild(el('div', { 'class': 'cw-note', text: T.conv_team })); }
          cells.push(who);
        }
        cells.push(el('td', { 'class': 'cw-left', text: T['m_' + r.milestone] || r.milestone }),
          el('td', { 'data-key': 'target', text: num(r.target) }), el('td', { 'data-key': 'per_week', text: num(r.per_week) }),
          el('td', { 'data-key': 'fact', text: num(r.fact) }), el('td', { 'data-key': 'expected', text: num(r.expected) }),
          el('td', { 'class': 'cw-pace-cell' }, [paceBar(r)]),
          el('td', { 'data-key': 'behind', 'class': r.behind ? 'cw-hot' : 'cw-ok',
                     text: r.behind ? '−' + num(r.behind_percent) + ' %' : T.on_pace }));
        rows.push(el('tr', { 'data-manager': m.manager_id, 'data-milestone': r.milestone, 'class': r.behind ? 'cw-behind' : '' }, cells));
      });
    });
    box.appendChild(el('div', { 'class': 'cw-scroll' }, [el('table', { id: 'cw-plan-table' }, [el('thead', {}, [head]), el('tbody', {}, rows)])]));
  }

  // -- ABC/XYZ -----------------------------------------------------------------------------------
  // The matrix's own span (3, 6, 12 months to today), or the page's own period when it was opened on one.
  var abc = { months: state.period === 'custom' ? 0 : 3, by: 'contact', manager: '', data: null };

  function isoDay(d) { return d.getFullYear() + '-' + ('0' + (d.getMonth() + 1)).slice(-2) + '-' + ('0' + d.getDate()).slice(-2); }

  function abcQuery() {
    var span = '';
    if (!abc.months && state.from && state.to) { span = '&from=' + state.from + '&to=' + state.to; } else {
      var to = new Date(), from = new Date(to.getFullYear(), to.getMonth() - (abc.months || 3), to.getDate() + 1);
      span = '&from=' + isoDay(from) + '&to=' + isoDay(to);
    }
    return '?lang=' + T.lang + span + '&by=' + abc.by;
  }

  function renderMatrix(matrix) {
    var box = document.getElementById('cw-abc-matrix');
    box.textContent = '';
    var max = Math.max.apply(null, Object.keys(matrix).map(function (k) { return matrix[k].clients; }).concat([1]));
    var tone = { A: [22, 163, 74], B: [202, 138, 4], C: [220, 38, 38] };
    var head = el('tr', {}, ['', 'X', 'Y', 'Z'].map(function (h) { return el('th', { text: h }); }));
    var rows = ['A', 'B', 'C'].map(function (a) {
      return el('tr', {}, [el('th', { text: a, scope: 'row' })].concat(['X', 'Y', 'Z'].map(function (x) {
        var cell = matrix[a + x], c = tone[a];
        var alpha = cell.clients ? (0.12 + 0.45 * cell.clients / max).toFixed(2) : 0;
        return el('td', { 'data-cell': a + x, style: 'background: rgba(' + c.join(',') + ',' + alpha + ')' }, [
          el('b', { text: a + x }), el('div', { text: T.clients + ': ' + num(cell.clients) }), el('div', { 'class': 'cw-note', text: num(cell.revenue) })]);
      })));
    });
    box.appendChild(el('table', { id: 'cw-abc-table', 'class': 'cw-matrix' }, [el('thead', {}, [head]), el('tbody', {}, rows)]));
  }

  function renderAbc(r) {
    abc.data = r;
    var pick = document.getElementById('cw-abc-manager');
    pick.textContent = '';
    pick.appendChild(el('option', { value: '', text: T.whole_team }));
    r.by_manager.forEach(function (m) { pick.appendChild(el('option', { value: m.manager_id || '', text: m.name || '—' })); });
    pick.value = abc.manager;
    var chosen = r.by_manager.filter(function (m) { return (m.manager_id || '') === abc.manager; })[0];
    renderMatrix(abc.manager && chosen ? chosen.matrix : r.matrix);
    var box = document.getElementById('cw-abc-movement');
    box.textContent = '';
    box.appendChild(el('p', { 'class': 'cw-hint', text: fill(T.new_lost, { 'new': num(r.new_clients), lost: num(r.lost_clients) }) }));
    var moved = r.movement.filter(function (m) { return !abc.manager || (m.manager_id || '') === abc.manager; });
    if (!moved.length) { box.appendChild(el('p', { text: T.no_movement })); return; }
    var head = el('tr', {}, [T.client, T.manager, T.was, T.now, T.revenue].map(function (h) { return el('th', { text: h }); }));
    var rows = moved.map(function (m) {
      var up = m.to < m.from;  // 'AX' < 'BZ': a better group sorts first
      return el('tr', { 'data-client': m.client_id }, [el('td', { text: m.name || ('#' + m.client_id) }), el('td', { 'class': 'cw-left', text: m.manager_name || '—' }),
        el('td', { text: m.from }), el('td', { 'class': up ? 'cw-ok' : 'cw-hot', text: m.to }), el('td', { text: num(m.revenue) })]);
    });
    box.appendChild(el('h2', { text: T.movement }));
    box.appendChild(el('div', { 'class': 'cw-scroll' }, [el('table', { id: 'cw-movement-table' }, [el('thead', {}, [head]), el('tbody', {}, rows)])]));
  }

  function getRaw(path, q) {
    return fetch('/dashboard/api/' + path + q, { headers: { 'Authorization': auth } }).then(function (r) {
      if (r.status === 401) { throw new Error('expired'); }
      if (!r.ok) { throw new Error('http ' + r.status); }
      return r.json();
    });
  }

  function loadPlan() {
    var month = document.getElementById('cw-month').value;
    return getRaw('plan', '?lang=' + T.lang + (month ? '&month=' + month : '')).then(renderPlan);
  }
  function loadAbc() { return getRaw('abcxyz', abcQuery()).then(renderAbc); }


  // -- expected payments -------------------------------------------------------------------------
  var PAY = [['overdue', 'pay_overdue'], ['today', 'pay_today'], ['tomorrow', 'pay_tomorrow'],
             ['next_7_days', 'pay_week'], ['received_today', 'pay_received']];

  function localDay(iso) {
    if (!iso) { return ''; }
    var p = iso.split('-');
    return T.lang === 'ru' ? p[2] + '.' + p[1] + '.' + p[0] : iso;
  }

  function payCell(slot) { return slot.count ? slot.count + ' · ' + num(slot.amount) : '—'; }

  function payDrill(item, bucket, label) {
    var slot = item[bucket];
    var close = el('button', { text: T.close, on: { click: function () { overlay.remove(); } } });
    var rows = slot.deals.map(function (d) {
      var when = bucket === 'received_today'
        ? (d.reason || []).map(function (r) { return T['pay_' + r] || r; }).join(', ')
        : localDay(d.expected_on) + (d.days_overdue ? ' · ' + T.pay_days_overdue + ': ' + d.days_overdue : '');
      return el('tr', { 'data-deal': d.deal_id }, [
        el('td', { text: d.name || ('#' + d.deal_id) }), el('td', { text: num(d.amount) }), el('td', { text: when }),
        el('td', {}, [el('a', { href: d.url, target: '_blank', rel: 'noopener', 'class': 'cw-crm-link', text: T.open_in_crm })])]);
    });
    var overlay = el('div', { 'class': 'cw-drill', id: 'cw-drill', on: { click: function (e) { if (e.target === overlay) { overlay.remove(); } } } }, [
      el('div', {}, [el('h2', { text: T.payments + ': ' + (item.name || '—') + ' — ' + label }), el('table', { id: 'cw-pay-deals' }, [
        el('thead', {}, [el('tr', {}, [T.deal, T.amount, bucket === 'received_today' ? T.pay_reason : T.pay_expected_on, '']
          .map(function (h) { return el('th', { text: h }); }))]),
        el('tbody', {}, rows)]), close])]);
    document.body.appendChild(overlay);
  }

  function renderPayments(r) {
    var box = document.getElementById('cw-pay-body');
    box.textContent = '';
    if (!r.configured) { box.appendChild(el('p', { 'class': 'cw-hint', id: 'cw-pay-setup', text: T.pay_setup })); }
    box.appendChild(el('div', { 'class': 'cw-kpis', id: 'cw-pay-kpis' }, PAY.map(function (p) {
      var t = r.totals[p[0]];
      return el('div', { 'class': 'cw-kpi' + (p[0] === 'overdue' && t.count ? ' cw-kpi-hot' : ''), 'data-key': p[0] },
                [el('span', { text: T[p[1]] }), el('b', { text: num(t.amount) }), el('small', { text: String(t.count) })]);
    })));
    if (!r.items.length) { box.appendChild(el('p', { text: T.pay_none })); return; }
    var head = el('tr', {}, [el('th', { text: T.manager })].concat(PAY.map(function (p) { return el('th', { text: T[p[1]] }); })));
    var rows = r.items.map(function (item) {
      return el('tr', { 'data-manager': item.manager_id || '' }, [el('td', { text: item.name || '—' })].concat(PAY.map(function (p) {
        var slot = item[p[0]];
        if (!slot.count) { return el('td', { text: '—' }); }
        return el('td', { 'class': p[0] === 'overdue' ? 'cw-hot' : '', 'data-bucket': p[0] }, [el('button', { 'class': 'cw-link', text: payCell(slot),
          on: { click: function () { payDrill(item, p[0], T[p[1]]); } } })]);
      })));
    });
    box.appendChild(el('div', { 'class': 'cw-scroll' }, [el('table', { id: 'cw-pay-table' }, [el('thead', {}, [head]), el('tbody', {}, rows)])]));
    box.appendChild(el('p', { 'class': 'cw-hint', text: T.pay_hint }));
  }

  function loadPayments() { return getRaw('payments', '?lang=' + T.lang).then(renderPayments); }

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
    return Promise.all([getJson('managers'), getJson('trend'), getJson('funnel', { pipeline_id: state.pipeline }),
                        loadPlan(), loadAbc(), loadPayments()]).then(function (res) {
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
    if (meta.lag_seconds > meta.lag_warning_seconds) {
      // The mirror is behind the CRM (a mass edit still being applied): say so before any figure.
      root.appendChild(el('p', { id: 'cw-lag', 'class': 'cw-warn', role: 'status',
                                 text: T.lag_warning.replace('{minutes}', String(Math.max(1, Math.round(meta.lag_seconds / 60)))) }));
    }
    root.appendChild(el('div', { 'class': 'cw-bar' }, [sel, from, to, apply,
      el('button', { id: 'cw-export-xlsx', text: T.export + ' XLSX', on: { click: function () { download('xlsx'); } } }),
      el('button', { id: 'cw-export-csv', text: T.export + ' CSV', on: { click: function () { download('csv'); } } }),
      el('span', { id: 'cw-status', 'class': 'cw-status', text: T.loading })]));
    root.appendChild(el('section', {}, [el('h2', { text: T.team }), el('div', { id: 'cw-team' })]));
    root.appendChild(el('section', {}, [el('h2', { text: T.charts }), el('div', { 'class': 'cw-charts' }, [
      el('div', { id: 'cw-chart-calls', 'class': 'cw-chart' }), el('div', { id: 'cw-chart-findings', 'class': 'cw-chart' }),
      el('div', { id: 'cw-chart-rules', 'class': 'cw-chart' })])]));
    root.appendChild(el('section', {}, [el('h2', { text: T.funnel }), el('div', { 'class': 'cw-bar' }, [pipe]), el('div', { id: 'cw-funnel-body' })]));
    root.appendChild(el('section', { id: 'cw-pay' }, [el('h2', { text: T.payments }), el('div', { id: 'cw-pay-body' })]));
    var now = new Date();
    var month = el('input', { type: 'month', id: 'cw-month', 'aria-label': T.month,
                              value: params.get('month') || (now.getFullYear() + '-' + ('0' + (now.getMonth() + 1)).slice(-2)) });
    month.addEventListener('change', function () { loadPlan().catch(showError); });
    root.appendChild(el('section', { id: 'cw-plan' }, [el('h2', { text: T.plan }), el('div', { 'class': 'cw-bar' }, [month]),
                                                        el('div', { id: 'cw-plan-body' })]));
    var spans = (abc.months ? [] : [el('option', { value: '0', text: T.custom })]).concat(
      [3, 6, 12].map(function (n) { return el('option', { value: String(n), text: T['months_' + n] }); }));
    var span = el('select', { id: 'cw-abc-span', 'aria-label': T.period }, spans);
    span.value = String(abc.months);
    span.addEventListener('change', function () { abc.months = Number(span.value); loadAbc().catch(showError); });
    var by = el('select', { id: 'cw-abc-by' }, [el('option', { value: 'contact', text: T.by_contact }), el('option', { value: 'company', text: T.by_company })]);
    by.addEventListener('change', function () { abc.by = by.value; loadAbc().catch(showError); });
    var who = el('select', { id: 'cw-abc-manager', 'aria-label': T.manager });
    who.addEventListener('change', function () { abc.manager = who.value; renderAbc(abc.data); });
    root.appendChild(el('section', { id: 'cw-abc' }, [el('h2', { text: T.abc }), el('div', { 'class': 'cw-bar' }, [span, by, who]),
      el('p', { 'class': 'cw-hint', text: T.abc_hint }),
      el('div', { 'class': 'cw-abc-grid' }, [el('div', { id: 'cw-abc-matrix' }), el('div', { id: 'cw-abc-movement' })])]));
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
