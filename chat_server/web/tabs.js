// Tabs after the WAI-ARIA pattern: a tablist of role=tab buttons (one in
// the tab order; arrow keys, Home and End move between them) controlling
// role=tabpanel regions.
import { h } from './dom.js';

let tabsCount = 0;

// tabs: [{ name, panel: Element, onShow?() }]. Returns { element, select(name), selected() }.
export function makeTabs(label, tabs) {
  tabsCount += 1;
  const prefix = `tabs-${tabsCount}`;
  let current = null;
  const buttons = tabs.map((tab, index) => h('button', {
    type: 'button',
    role: 'tab',
    id: `${prefix}-tab-${index}`,
    'aria-controls': `${prefix}-panel-${index}`,
    onclick: () => select(index),
  }, tab.name));
  const panels = tabs.map((tab, index) => h('div', {
    role: 'tabpanel',
    id: `${prefix}-panel-${index}`,
    'aria-labelledby': `${prefix}-tab-${index}`,
    class: 'tabpanel',
  }, tab.panel));
  const list = h('div', { role: 'tablist', 'aria-label': label, class: 'tablist' }, buttons);

  function select(index, focus = false) {
    current = index;
    buttons.forEach((button, i) => {
      button.setAttribute('aria-selected', String(i === index));
      button.tabIndex = i === index ? 0 : -1;
      panels[i].hidden = i !== index;
    });
    if (focus) buttons[index].focus();
    tabs[index].onShow?.();
  }

  list.addEventListener('keydown', (event) => {
    const last = buttons.length - 1;
    const moves = { ArrowRight: current + 1, ArrowLeft: current - 1, Home: 0, End: last };
    if (!(event.key in moves)) return;
    event.preventDefault();
    const next = moves[event.key];
    select(next < 0 ? last : next > last ? 0 : next, true);
  });

  return {
    element: h('div', { class: 'tabs' }, list, panels),
    select: (name) => select(Math.max(0, tabs.findIndex((tab) => tab.name === name))),
    selected: () => tabs[current]?.name,
  };
}
