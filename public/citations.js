// Citation markers in answers ([1], [2], ...) link to the passage they cite. A plain click opens
// that passage in a side panel, with a link to the file; a middle- or modified click still opens
// the passage as a page of its own. The panel is built from text nodes only: passages are
// document content, never markup.
(() => {
  const ROUTE = "/assistants/citations/";
  let panel = null;

  function make(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    Object.assign(node, props);
    node.append(...children);
    return node;
  }

  function close() {
    if (panel !== null) {
      panel.remove();
      panel = null;
    }
  }

  function fill(own, data) {
    const body = own.querySelector(".citation-body");
    own.querySelector(".citation-title").textContent = `[${data.marker}] ${data.file_name}`;
    const meta = make("p", { className: "citation-meta" }, [
      `Found by searching “${data.query}” · score ${Number(data.score).toFixed(2)}`,
    ]);
    const passage = make("blockquote", { className: "citation-passage" }, [data.passage]);
    const file = data.file_url
      ? make("a", { className: "citation-file", href: data.file_url, target: "_blank", rel: "noopener" }, [
          `Open ${data.file_name}`,
        ])
      : make("p", { className: "citation-meta" }, ["The file has been deleted."]);
    body.replaceChildren(meta, passage, file);
  }

  async function open(path) {
    close();
    const own = make("aside", { id: "citation-panel", className: "citation-panel", tabIndex: -1 }, [
      make("div", { className: "citation-header" }, [
        make("h2", { className: "citation-title" }, ["Source"]),
        make("button", { className: "citation-close", type: "button", title: "Close", onclick: close }, ["×"]),
      ]),
      make("div", { className: "citation-body" }, [make("p", { className: "citation-meta" }, ["Loading…"])]),
    ]);
    own.setAttribute("role", "complementary");
    own.setAttribute("aria-label", "Cited source");
    panel = own;
    document.body.append(own);
    own.focus();
    try {
      const response = await fetch(path, { headers: { accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error(String(response.status));
      const data = await response.json();
      if (panel === own) fill(own, data);
    } catch (error) {
      if (panel === own) {
        own.querySelector(".citation-body").replaceChildren(
          make("p", { className: "citation-meta" }, ["This source cannot be shown any more."]),
        );
      }
    }
  }

  document.addEventListener(
    "click",
    (event) => {
      const link = event.target instanceof Element ? event.target.closest("a[href]") : null;
      if (link === null || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
      const url = new URL(link.href, window.location.href);
      if (url.origin !== window.location.origin || !url.pathname.startsWith(ROUTE)) return;
      event.preventDefault();
      event.stopPropagation();
      open(url.pathname);
    },
    true,
  );
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") close();
  });
})();
