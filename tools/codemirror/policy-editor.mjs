// The key-policy editor: CodeMirror 6 over a <textarea data-policy-editor>.
//
// The textarea stays in the form (it is what is posted); the editor sits
// beside it and writes every change back. Without JavaScript the textarea
// is the editor.
//
// Strict CSP (style-src 'self', no nonce): CodeMirror injects its styles
// through style-mod, which writes a <style> element into a document but
// uses a constructed stylesheet (adoptedStyleSheets) inside a shadow root.
// The editor therefore lives in a shadow root; its colours come from the
// page's CSS custom properties, which inherit into it, so the light and dark
// themes follow kmsweb.css.
import { EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter, drawSelection } from "@codemirror/view";
import { history, defaultKeymap, historyKeymap } from "@codemirror/commands";
import { EditorState } from "@codemirror/state";
import { json } from "@codemirror/lang-json";
import { linter, lintGutter, setDiagnostics, forceLinting } from "@codemirror/lint";
import { HighlightStyle, syntaxHighlighting, bracketMatching, foldGutter, indentOnInput, foldKeymap } from "@codemirror/language";
import { tags } from "@lezer/highlight";

const highlight = HighlightStyle.define([
  { tag: tags.propertyName, color: "var(--accent)" },
  { tag: tags.string, color: "var(--ok)" },
  { tag: [tags.number, tags.bool, tags.null], color: "var(--warn)" },
  { tag: [tags.brace, tags.squareBracket, tags.separator, tags.punctuation], color: "var(--muted)" },
  { tag: tags.invalid, color: "var(--bad)" },
]);

const theme = EditorView.theme({
  "&": {
    color: "var(--ink)",
    backgroundColor: "var(--field)",
    border: "1px solid var(--line)",
    borderRadius: "6px",
    fontSize: "12.5px",
  },
  "&.cm-focused": { outline: "2px solid var(--focus)", outlineOffset: "1px" },
  ".cm-scroller": { fontFamily: "var(--mono)", lineHeight: "1.5", maxHeight: "32em", overflow: "auto" },
  ".cm-content": { caretColor: "var(--ink)", minHeight: "12em" },
  ".cm-gutters": { backgroundColor: "var(--head-bg)", color: "var(--muted)", border: "none" },
  ".cm-activeLine": { backgroundColor: "var(--row-hover)" },
  ".cm-activeLineGutter": { backgroundColor: "var(--hover)" },
  "&.cm-focused .cm-selectionBackground, .cm-selectionBackground, ::selection": { backgroundColor: "var(--neutral-bg)" },
  ".cm-cursor": { borderLeftColor: "var(--ink)" },
  ".cm-tooltip": { backgroundColor: "var(--panel)", color: "var(--ink)", border: "1px solid var(--line)" },
  ".cm-diagnostic-error": { borderLeftColor: "var(--bad)" },
  ".cm-lintRange-error": { backgroundImage: "none", textDecoration: "underline wavy var(--bad)" },
  ".cm-panels": { backgroundColor: "var(--panel)", color: "var(--ink)" },
});

// JSON.parse's messages, in words (the server's messages say the same).
const WORDS = [
  [/Expected ',' or '}' after property value/, "a comma is missing between two items, or a closing brace"],
  [/Expected ',' or ']' after array element/, "a comma is missing between two items, or a closing bracket"],
  [/Expected ':' after property name/, "a colon is missing between a name and its value"],
  [/Expected double-quoted property name/, "a name is expected here, in double quotes (is there a comma before a closing brace?)"],
  [/Unterminated string/, "a string is not closed: a double quote is missing"],
  [/Bad control character/, "a string contains a line break or a tab; write \\n or \\t instead"],
  [/Bad escaped character|Bad Unicode escape/, "a backslash starts an escape JSON does not know; write \\\\ for a backslash"],
  [/Unexpected non-whitespace character after JSON/, "there is more text after the end of the document"],
  [/Unexpected end of JSON input/, "the document ends too early: a closing brace or bracket is missing"],
  [/Unexpected token|is not valid JSON|Unexpected number|Unexpected string/, "a value is expected here (is there a comma before a closing bracket, or a missing quote?)"],
];

function inWords(message) {
  for (const [pattern, words] of WORDS) if (pattern.test(message)) return words;
  return message;
}

function lineColumn(doc, pos) {
  const line = doc.lineAt(Math.min(pos, doc.length));
  return { line: line.number, column: pos - line.from + 1 };
}

// The first JSON problem of the document, at its line and column.
function jsonProblems(view) {
  const doc = view.state.doc;
  const text = doc.toString();
  try {
    JSON.parse(text);
    return [];
  } catch (e) {
    const at = /at position (\d+)/.exec(e.message);
    let pos = at ? Number(at[1]) : text.length;
    if (/Unexpected end of JSON input/.test(e.message)) pos = text.length;
    const { line, column } = lineColumn(doc, pos);
    return [{
      from: Math.min(pos, doc.length),
      to: Math.min(pos + 1, doc.length),
      severity: "error",
      message: `Line ${line}, column ${column}: ${inWords(e.message)}.`,
    }];
  }
}

function mount(textarea) {
  if (textarea.dataset.editorMounted) return;
  textarea.dataset.editorMounted = "true";
  const host = document.createElement("div");
  host.className = "code-editor";
  host.id = textarea.id + "-editor";
  textarea.after(host);
  const root = host.attachShadow({ mode: "open" });
  const label = textarea.getAttribute("aria-label") || (textarea.labels && textarea.labels[0] ? textarea.labels[0].textContent : "JSON");
  const view = new EditorView({
    root,
    parent: root,
    state: EditorState.create({
      doc: textarea.value,
      extensions: [
        lineNumbers(),
        highlightActiveLineGutter(),
        foldGutter(),
        history(),
        drawSelection(),
        indentOnInput(),
        bracketMatching(),
        highlightActiveLine(),
        keymap.of([...defaultKeymap, ...historyKeymap, ...foldKeymap]),
        json(),
        syntaxHighlighting(highlight),
        theme,
        lintGutter(),
        linter(jsonProblems, { delay: 250 }),
        EditorView.lineWrapping,
        EditorView.contentAttributes.of({ "aria-label": label, "aria-multiline": "true" }),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) textarea.value = update.state.doc.toString();
        }),
      ],
    }),
  });
  textarea.hidden = true;
  textarea.editorView = view;
  // A problem the server found (a policy the engine refuses, say) is marked
  // at the line and column it gave.
  const line = Number(textarea.dataset.errorLine || 0);
  if (line > 0 && line <= view.state.doc.lines) {
    const l = view.state.doc.line(line);
    const column = Math.max(1, Number(textarea.dataset.errorColumn || 1));
    const from = Math.min(l.from + column - 1, l.to);
    view.dispatch(setDiagnostics(view.state, [{
      from, to: Math.min(from + 1, view.state.doc.length), severity: "error",
      message: textarea.dataset.errorMessage || "The server refused this line.",
    }]));
    view.dispatch({ selection: { anchor: from }, scrollIntoView: true });
  } else {
    forceLinting(view);
  }
}

function mountAll(root) {
  (root.querySelectorAll ? root : document).querySelectorAll("textarea[data-policy-editor]").forEach(mount);
}

document.addEventListener("DOMContentLoaded", () => mountAll(document));
document.addEventListener("htmx:load", (e) => mountAll(e.target));
window.kmswebPolicyEditor = { mount, mountAll };
