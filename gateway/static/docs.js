// A readable view of /openapi.json: every operation with its parameters, body and reply.
"use strict";

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};
const refName = (schema) => (schema && schema.$ref ? schema.$ref.split("/").pop() : null);

function schemaText(schema, schemas, depth = 0) {
  const name = refName(schema);
  if (name) {
    if (depth > 2) return name;
    const props = schemas[name].properties || {};
    const inner = Object.entries(props).map(([k, v]) => `${"  ".repeat(depth + 1)}${k}: ${schemaText(v, schemas, depth + 1)}`);
    return `${name} {\n${inner.join("\n")}\n${"  ".repeat(depth)}}`;
  }
  if (schema.allOf) return schemaText(schema.allOf[0], schemas, depth) + " (read-only)";
  if (schema.type === "array") return `[${schemaText(schema.items, schemas, depth)}]`;
  if (schema.enum) return schema.enum.join(" | ");
  return schema.format ? `${schema.type} (${schema.format})` : schema.type;
}

fetch("/openapi.json").then((r) => r.json()).then((doc) => {
  const main = document.getElementById("docs");
  main.replaceChildren(el("p", { textContent: doc.info.description }));
  const schemas = doc.components.schemas;
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [verb, op] of Object.entries(methods)) {
      const section = el("section", { className: "op", id: op.operationId });
      section.append(el("h2", {}, el("span", { className: `verb ${verb}`, textContent: verb }), el("code", { textContent: path })));
      section.append(el("p", { textContent: op.summary }));
      if (op.parameters.length) {
        const list = el("ul");
        for (const p of op.parameters) list.append(el("li", {}, el("code", { textContent: p.name }), ` (${p.in}${p.required ? ", required" : ""}): ${schemaText(p.schema, schemas)}`));
        section.append(el("h3", { textContent: "Parameters" }), list);
      }
      if (op.requestBody) {
        section.append(el("h3", { textContent: "Request body" }),
          el("pre", { textContent: schemaText(op.requestBody.content["application/json"].schema, schemas) }));
      }
      const ok = op.responses["200"];
      const [type, media] = Object.entries(ok.content)[0];
      section.append(el("h3", { textContent: `Reply (${type})` }),
        el("pre", { textContent: type === "application/json" ? schemaText(media.schema, schemas) : ok.description }));
      main.append(section);
    }
  }
});
