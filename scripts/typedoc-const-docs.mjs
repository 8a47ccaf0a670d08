/**
 * TypeDoc plugin: the members of an `as const` table whose values are their own descriptions (ERROR_CODES: code ->
 * meaning) are documented by those values. Without it, every code would need a doc comment repeating its string, and
 * the "every export documented" check would push people into keeping two copies of the one table of codes in sync.
 * Only for the variables named in TABLES; only members without a comment of their own; only string literal values.
 */
import { Comment, Converter, ReflectionKind } from 'typedoc';

const TABLES = new Set(['ERROR_CODES']);

/** @param {import('typedoc').Application} app */
export function load(app) {
  app.converter.on(Converter.EVENT_RESOLVE_BEGIN, (context) => {
    for (const variable of context.project.getReflectionsByKind(ReflectionKind.Variable)) {
      if (!TABLES.has(variable.name) || variable.type?.type !== 'reflection') continue;
      for (const member of variable.type.declaration.children ?? []) {
        if (member.comment || member.type?.type !== 'literal' || typeof member.type.value !== 'string') continue;
        member.comment = new Comment([{ kind: 'text', text: member.type.value }]);
      }
    }
  });
}
