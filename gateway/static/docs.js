// A readable view of /openapi.json: every operation with its parameters, body and reply.
"use strict";

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};
const refName = (schema) => (schema && schema.$ref ? schema.$ref.split("/").pop() : null);

// What a schema asks beyond its type: the contract's rules, as the document states them.
function notes(schema) {
  const said = [];
  if (schema.readOnly) said.push("read-only");
  if (schema.minLength !== undefined && schema.maxLength !== undefined) said.push(`${schema.minLength}-${schema.maxLength} characters`);
  else if (schema.maxLength !== undefined) said.push(`at most ${schema.maxLength} characters`);
  else if (schema.minLength) said.push(`at least ${schema.minLength} character${schema.minLength > 1 ? "s" : ""}`);
  if (schema["x-not-blank"]) said.push("not blank");
  else if (schema.pattern && schema.format === undefined) said.push(`matching ${schema.pattern}`);
  if (schema.minimum !== undefined) said.push(`at least ${schema.minimum}`);
  if (schema.maximum !== undefined) said.push(`at most ${schema.maximum}`);
  if (schema.minItems !== undefined) said.push(`at least ${schema.minItems} item${schema.minItems > 1 ? "s" : ""}`);
  if (schema.maxItems !== undefined) said.push(`at most ${schema.maxItems} items`);
  if (schema.description) said.push(schema.description);
  if (schema.not && schema.not.enum) said.push(`not ${schema.not.enum.join(" or ")}`);
  return said.length ? ` (${said.join(", ")})` : "";
}

function schemaText(schema, schemas, depth = 0) {
  const name = refName(schema);
  if (name) {
    if (depth > 2) return name;
    const required = new Set(schemas[name].required || []);
    const props = schemas[name].properties || {};
    const inner = Object.entries(props).map(([k, v]) =>
      `${"  ".repeat(depth + 1)}${k}${required.has(k) ? " (required)" : ""}: ${schemaText(v, schemas, depth + 1)}`);
    return `${name} {\n${inner.join("\n")}\n${"  ".repeat(depth)}}`;
  }
  if (schema.allOf) return schemaText(schema.allOf[0], schemas, depth) + notes(schema);
  if (schema.type === "array") return `[${schemaText(schema.items, schemas, depth)}]` + notes(schema);
  if (schema.enum) return schema.enum.join(" | ");
  return (schema.format ? `${schema.type} (${schema.format})` : schema.type) + notes(schema);
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
