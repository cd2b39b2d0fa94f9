-- council.review: review before apply. With `council.confirm_edits` (the default) the server
-- sends Generate's edits and Debug's fixes as changes that need confirmation (LSP change
-- annotations). Neovim's own `vim.lsp.util.apply_workspace_edit` ignores that flag and
-- applies them at once, so this module shows the change first: a floating window with a
-- unified diff, accepted with `a`/<CR> and rejected with `r`/`q`/<Esc> (configurable).
--
-- Two ways an edit arrives:
--   * `workspace/applyEdit` (Generate): `M.handler`, the council client's handler, waits for
--     the decision (the request runs in a coroutine; as `window/showMessageRequest` does)
--     and answers `applied` true or false, with "rejected in review" as the reason;
--   * a code action's own edit (Debug's quick fix), which `vim.lsp.buf.code_action()` hands
--     to `vim.lsp.util.apply_workspace_edit` directly: the plugin wraps that function, and
--     only edits carrying an annotation that needs confirmation take the detour. Servers send
--     those only to clients that advertise `changeAnnotationSupport`, which only the council
--     client does, so other servers' edits are not affected.
-- Edits without such an annotation (Add tests, or the setting off) apply as before.
local M = {}

M.REJECTED = "rejected in review"

M.defaults = {
  -- Each a key or a list of keys, mapped in the review window (normal mode).
  keys = { accept = { "a", "<CR>" }, reject = { "r", "q", "<Esc>" } },
  border = "rounded",
}
M.options = vim.deepcopy(M.defaults)

local util = vim.lsp.util
-- Neovim's own, captured before the wrapper below replaces it: applying an accepted edit
-- must not ask again.
local apply_workspace_edit = util.apply_workspace_edit

--- The review window while one is open: { buf, win, decide }.
M.current = nil
local queue = {} -- reviews waiting for the open one to be decided

local function list(keys)
  return type(keys) == "table" and keys or { keys }
end

--- Whether any change in `edit` refers to an annotation that needs confirmation.
function M.needs_confirmation(edit)
  local notes = type(edit) == "table" and edit.changeAnnotations or nil
  if type(notes) ~= "table" then
    return false
  end
  local function needs(id)
    return id ~= nil and type(notes[id]) == "table" and notes[id].needsConfirmation == true
  end
  for _, change in ipairs(edit.documentChanges or {}) do
    if needs(change.annotationId) then
      return true
    end
    for _, e in ipairs(change.edits or {}) do
      if needs(e.annotationId) then
        return true
      end
    end
  end
  for _, edits in pairs(edit.changes or {}) do
    for _, e in ipairs(edits) do
      if needs(e.annotationId) then
        return true
      end
    end
  end
  return false
end

--- {uri, version?, edits} for every text change of `edit`.
local function text_changes(edit)
  local out = {}
  for _, change in ipairs(edit.documentChanges or {}) do
    if change.textDocument and change.edits then
      table.insert(out, { uri = change.textDocument.uri, version = change.textDocument.version, edits = change.edits })
    end
  end
  for uri, edits in pairs(edit.changes or {}) do
    table.insert(out, { uri = uri, edits = edits })
  end
  return out
end

--- Why the edit can no longer apply (a buffer changed since the server computed it), or nil.
--- The same rule as Neovim's own: a named version older than the buffer's is stale.
local function stale(edit)
  for _, c in ipairs(text_changes(edit)) do
    local bufnr = vim.uri_to_bufnr(c.uri)
    if type(c.version) == "number" and c.version > 0 and vim.api.nvim_buf_is_loaded(bufnr)
      and util.buf_versions[bufnr] > c.version then
      return "the buffer changed since the council computed the edit"
    end
  end
end

local diff = (vim.text and vim.text.diff) or vim.diff

--- The lines the review window shows: the annotation's label and description, then a
--- unified diff per document (its text before, and after the edit applied to a scratch copy).
function M.render(edit, encoding)
  local lines = {}
  for _, note in pairs(edit.changeAnnotations or {}) do
    if note.needsConfirmation and note.description and note.description ~= "" then
      vim.list_extend(lines, vim.split(note.description, "\n", { plain = true }))
      table.insert(lines, "")
      break
    end
  end
  for _, change in ipairs(edit.documentChanges or {}) do
    if change.kind == "create" or change.kind == "delete" then
      table.insert(lines, ("%s %s"):format(change.kind, vim.fn.fnamemodify(vim.uri_to_fname(change.uri), ":~:.")))
    elseif change.kind == "rename" then
      table.insert(lines, ("rename %s -> %s"):format(vim.uri_to_fname(change.oldUri), vim.uri_to_fname(change.newUri)))
    end
  end
  for _, c in ipairs(text_changes(edit)) do
    local bufnr = vim.uri_to_bufnr(c.uri)
    vim.fn.bufload(bufnr)
    local before = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)
    local scratch = vim.api.nvim_create_buf(false, true)
    vim.api.nvim_buf_set_lines(scratch, 0, -1, false, before)
    vim.bo[scratch].eol, vim.bo[scratch].fixeol = vim.bo[bufnr].eol, vim.bo[bufnr].fixeol
    util.apply_text_edits(c.edits, scratch, encoding)
    local after = vim.api.nvim_buf_get_lines(scratch, 0, -1, false)
    vim.api.nvim_buf_delete(scratch, { force = true })
    local name = vim.fn.fnamemodify(vim.uri_to_fname(c.uri), ":~:.")
    local hunks = diff(table.concat(before, "\n") .. "\n", table.concat(after, "\n") .. "\n",
      { result_type = "unified", ctxlen = 3, algorithm = "histogram" })
    vim.list_extend(lines, { "--- a/" .. name, "+++ b/" .. name })
    vim.list_extend(lines, vim.split(vim.trim(hunks ~= "" and hunks or "(no change)"), "\n", { plain = true }))
  end
  return lines
end

local function label_of(edit, fallback)
  for _, note in pairs(edit.changeAnnotations or {}) do
    if note.needsConfirmation and note.label then
      return note.label
    end
  end
  return fallback or "Council: review the change"
end

local function hint()
  local keys = M.options.keys
  return (" %s accept   %s reject "):format(table.concat(list(keys.accept), "/"), table.concat(list(keys.reject), "/"))
end

local function open_next()
  local item = table.remove(queue, 1)
  if not item then
    return
  end
  local lines = M.render(item.edit, item.encoding)
  local buf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modifiable = false
  vim.bo[buf].bufhidden = "wipe"
  vim.bo[buf].filetype = "diff"
  local width = 40
  for _, l in ipairs(lines) do
    width = math.max(width, vim.fn.strdisplaywidth(l) + 1)
  end
  width = math.min(width, math.max(20, math.floor(vim.o.columns * 0.9)))
  local height = math.min(#lines, math.max(3, math.floor((vim.o.lines - 4) * 0.8)))
  local win = vim.api.nvim_open_win(buf, true, {
    relative = "editor",
    width = width,
    height = height,
    row = math.max(0, math.floor((vim.o.lines - height) / 2) - 1),
    col = math.max(0, math.floor((vim.o.columns - width) / 2)),
    style = "minimal",
    border = M.options.border,
    title = " " .. label_of(item.edit, item.label) .. " ",
    title_pos = "center",
    footer = hint(),
    footer_pos = "center",
  })
  vim.wo[win].wrap = false
  local decided = false
  local function decide(accepted)
    if decided then
      return
    end
    decided = true
    M.current = nil
    if vim.api.nvim_win_is_valid(win) then
      vim.api.nvim_win_close(win, true)
    end
    local ok, reason = false, M.REJECTED
    if accepted then
      reason = stale(item.edit) -- the user may have edited the buffer meanwhile
      if not reason then
        local applied, err = pcall(apply_workspace_edit, item.edit, item.encoding)
        ok, reason = applied, (not applied) and tostring(err) or nil
      end
    end
    item.done(ok, reason)
    vim.schedule(open_next)
  end
  for _, key in ipairs(list(M.options.keys.accept)) do
    vim.keymap.set("n", key, function() decide(true) end, { buffer = buf, nowait = true, desc = "council: accept the change" })
  end
  for _, key in ipairs(list(M.options.keys.reject)) do
    vim.keymap.set("n", key, function() decide(false) end, { buffer = buf, nowait = true, desc = "council: reject the change" })
  end
  -- closed any other way (:q, <C-w>c): a rejection, so the server is never left waiting
  vim.api.nvim_create_autocmd("WinClosed", {
    pattern = tostring(win),
    once = true,
    callback = function() vim.schedule(function() decide(false) end) end,
  })
  M.current = { buf = buf, win = win, lines = lines, decide = decide }
end

--- Show `edit` for review; `done(applied, reason)` runs once the user decided (or at once,
--- without a window, when the edit is already stale).
function M.review(edit, encoding, label, done)
  local reason = stale(edit)
  if reason then
    done(false, reason)
    return
  end
  table.insert(queue, { edit = edit, encoding = encoding, label = label, done = done })
  if not M.current then
    open_next()
  end
end

--- The council client's `workspace/applyEdit` handler.
function M.handler(err, params, ctx)
  local default = vim.lsp.handlers["workspace/applyEdit"]
  if not (type(params) == "table" and M.needs_confirmation(params.edit)) then
    return default(err, params, ctx)
  end
  local co, is_main = coroutine.running()
  if not co or is_main then -- not inside the rpc's coroutine: there is no waiting for the user
    return { applied = false, failureReason = "council: cannot show the review here" }
  end
  local client = assert(vim.lsp.get_client_by_id(ctx.client_id))
  M.review(params.edit, client.offset_encoding, params.label, function(ok, reason)
    -- scheduled, so that the resume never comes before the yield below
    vim.schedule(function() coroutine.resume(co, ok, reason) end)
  end)
  local ok, reason = coroutine.yield()
  return { applied = ok, failureReason = reason }
end

--- Route code actions' edits that need confirmation through the review (once).
local function wrap_code_action_edits()
  if util.apply_workspace_edit ~= apply_workspace_edit then
    return
  end
  util.apply_workspace_edit = function(edit, encoding, ...)
    if M.needs_confirmation(edit) and encoding then
      M.review(edit, encoding, nil, function(ok, reason)
        if not ok and reason ~= M.REJECTED then
          vim.notify("council: not applied: " .. tostring(reason), vim.log.levels.WARN, { title = "council" })
        end
      end)
      return
    end
    return apply_workspace_edit(edit, encoding, ...)
  end
end

function M.setup(opts)
  M.options = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts or {})
  wrap_code_action_edits()
end

return M
