-- Inline completions: native vim.lsp.inline_completion (Neovim >= 0.12) or an extmark
-- ghost-text fallback for Neovim 0.11 (textDocument/inlineCompletion, LSP 3.18).
--
-- Ghost-text mode, the keys (all in insert mode, all configurable in setup's inline.keymaps):
-- accept all, accept the next word, accept the rest of the line (what is left stays as ghost
-- text), dismiss, next/previous candidate (with completion.candidates > 1; asks the server
-- again as an invoked request when only one is shown, as VS Code does) and invoke.
-- With completion.trigger = "manual" (in setup's settings, or in a council.toml, which
-- the plugin learns from council/inlineStats) no automatic request is sent at all: only
-- the invoke key asks.
local M = {}

local ns = vim.api.nvim_create_namespace("council_inline")
local INVOKED, AUTOMATIC = 1, 2

M.opts = nil
-- state per buffer: { items, index, row, col, extmark, request_id, client_id, changedtick }
M.state = {}
-- the server's completion.trigger per client (council/inlineStats), for council.toml users
M.server_trigger = {}
-- the buffer of the last request, for :checkhealth (which runs in a buffer of its own)
M.last_bufnr = nil
local timers = {}

local function council_client(bufnr)
  return vim.lsp.get_clients({ name = "council", bufnr = bufnr })[1]
end

local function item_text(item)
  local t = item.insertText
  if type(t) == "table" then
    t = t.value
  end
  return t or ""
end

function M.clear(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local st = M.state[bufnr]
  if st and st.request_id then
    local client = vim.lsp.get_client_by_id(st.client_id)
    if client then
      client:cancel_request(st.request_id)
    end
  end
  pcall(vim.api.nvim_buf_clear_namespace, bufnr, ns, 0, -1)
  M.state[bufnr] = nil
end

--- The text that would be inserted at the cursor by the current item, as lines.
local function ghost_lines(bufnr, st)
  local item = st.items[st.index]
  local text = item_text(item)
  local line = vim.api.nvim_buf_get_lines(bufnr, st.row, st.row + 1, false)[1] or ""
  if item.range then
    local client = vim.lsp.get_client_by_id(st.client_id)
    local enc = client and client.offset_encoding or "utf-16"
    local scol = vim.str_byteindex(line, enc, item.range.start.character, false)
    local typed = line:sub(scol + 1, st.col)
    if text:sub(1, #typed) == typed then
      text = text:sub(#typed + 1)
    end
  end
  return vim.split(text, "\n", { plain = true })
end

local function render(bufnr)
  local st = M.state[bufnr]
  pcall(vim.api.nvim_buf_clear_namespace, bufnr, ns, 0, -1)
  if not st or not st.items or #st.items == 0 then
    return
  end
  local lines = ghost_lines(bufnr, st)
  if #lines == 0 or (#lines == 1 and lines[1] == "") then
    return
  end
  local hl = M.opts.hl_group
  local virt_lines = {}
  for i = 2, #lines do
    table.insert(virt_lines, { { lines[i], hl } })
  end
  st.extmark = vim.api.nvim_buf_set_extmark(bufnr, ns, st.row, st.col, {
    virt_text = { { lines[1], hl } },
    virt_text_pos = "inline",
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = "combine",
  })
  st.lines = lines
end

function M.visible(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local st = M.state[bufnr]
  return st ~= nil and st.lines ~= nil and st.items ~= nil and #st.items > 0
end

--- Text currently shown as ghost text (for tests/statuslines).
function M.ghost_text(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local marks = vim.api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })
  local out = {}
  for _, m in ipairs(marks) do
    local d = m[4]
    local line = {}
    for _, chunk in ipairs(d.virt_text or {}) do
      table.insert(line, chunk[1])
    end
    table.insert(out, table.concat(line))
    for _, vl in ipairs(d.virt_lines or {}) do
      local l = {}
      for _, chunk in ipairs(vl) do
        table.insert(l, chunk[1])
      end
      table.insert(out, table.concat(l))
    end
  end
  return table.concat(out, "\n")
end

--- Whether suggestions come only on the invoke key: the plugin's auto_trigger = false, or
--- completion.trigger = "manual" in setup's settings (which win, as editor settings do on
--- the server), or else in the server's own settings (a council.toml).
function M.manual(bufnr)
  if M.opts and M.opts.auto_trigger == false then
    return true
  end
  local settings = require("council").options.settings or {}
  local completion = type(settings.completion) == "table" and settings.completion or {}
  if completion.trigger ~= nil then
    return completion.trigger == "manual"
  end
  local client = council_client(bufnr)
  return client ~= nil and M.server_trigger[client.id] == "manual"
end

--- Ask the server for its completion settings (council.toml may set the trigger).
function M.learn(client)
  client:request("council/inlineStats", { since = 2147483647 }, function(err, result)
    if not err and type(result) == "table" and type(result.trigger) == "string" then
      M.server_trigger[client.id] = result.trigger
    end
  end)
end

--- Ask the server for a suggestion at the cursor. `invoked` true for an explicit request;
--- `select` (a count) moves to another candidate once the answer arrives (cycling).
function M.request(invoked, bufnr, select)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local client = council_client(bufnr)
  if not client then
    return
  end
  M.clear(bufnr) -- cancels the stale request, if any
  local win = vim.api.nvim_get_current_win()
  local cursor = vim.api.nvim_win_get_cursor(win)
  local params = vim.lsp.util.make_position_params(win, client.offset_encoding)
  params.context = { triggerKind = invoked and INVOKED or AUTOMATIC }
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  local st = { row = cursor[1] - 1, col = cursor[2], client_id = client.id, changedtick = tick, index = 1 }
  M.state[bufnr] = st
  M.last_bufnr = bufnr
  local ok, request_id = client:request("textDocument/inlineCompletion", params, function(err, result)
    if M.state[bufnr] ~= st then
      return -- superseded
    end
    st.request_id = nil
    if err or not result then
      return
    end
    local items = result.items or result
    if type(items) ~= "table" or #items == 0 then
      return
    end
    if vim.api.nvim_buf_get_changedtick(bufnr) ~= st.changedtick then
      return -- the buffer changed since; a newer request is (or will be) on its way
    end
    local cur = vim.api.nvim_win_get_cursor(0)
    if vim.api.nvim_get_current_buf() ~= bufnr or cur[1] - 1 ~= st.row or cur[2] ~= st.col then
      return
    end
    st.items = items
    if select then
      st.index = (select % #items) + 1
    end
    render(bufnr)
  end, bufnr)
  if ok then
    st.request_id = request_id
  end
  return ok
end

--- Accept the shown suggestion; returns true when something was inserted.
function M.accept(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  if not M.visible(bufnr) then
    return false
  end
  local st = M.state[bufnr]
  local lines = st.lines
  M.clear(bufnr)
  vim.api.nvim_buf_set_text(bufnr, st.row, st.col, st.row, st.col, lines)
  local last_row = st.row + #lines
  local last_col = (#lines == 1) and (st.col + #lines[1]) or #lines[#lines]
  pcall(vim.api.nvim_win_set_cursor, 0, { last_row, last_col })
  return true
end

--- The part of `text` that accepting a word or a line takes.
local function part_of(text, unit)
  if unit == "line" then
    local first = text:match("^[^\n]*")
    return first ~= "" and first or (text:match("^\n[^\n]*") or text)
  end
  return text:match("^[ \t]*[%w_]+") or text:match("^[ \t]*[^%w_%s]+")
    or text:match("^[ \t]*\n[ \t]*") or text
end

--- Accept the next word or the rest of the line of the shown suggestion. What is left stays
--- as ghost text, and so do the other candidates that start with the accepted text.
function M.accept_part(unit, bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  if not M.visible(bufnr) then
    return false
  end
  local st = M.state[bufnr]
  local shown = table.concat(st.lines, "\n")
  local part = part_of(shown, unit)
  if #part >= #shown then
    return M.accept(bufnr)
  end
  local rest, current = {}, st.index
  for i, item in ipairs(st.items) do
    st.index = i
    local text = table.concat(ghost_lines(bufnr, st), "\n")
    if text:sub(1, #part) == part and #text > #part then
      table.insert(rest, { insertText = text:sub(#part + 1) })
      if i == current then
        current = #rest
      end
    end
  end
  local lines = vim.split(part, "\n", { plain = true })
  vim.api.nvim_buf_set_text(bufnr, st.row, st.col, st.row, st.col, lines)
  local row = st.row + #lines - 1
  local col = (#lines == 1) and (st.col + #lines[1]) or #lines[#lines]
  pcall(vim.api.nvim_win_set_cursor, 0, { row + 1, col })
  -- the same state goes on, at the new cursor: TextChangedI and CursorMovedI see that the
  -- change was ours (changedtick and position match) and leave the ghost text alone
  st.items, st.index, st.row, st.col = rest, math.min(current, #rest), row, col
  st.changedtick = vim.api.nvim_buf_get_changedtick(bufnr)
  render(bufnr)
  return true
end

--- Show the next (delta 1) or previous (-1) candidate. With fewer than two, ask again as an
--- invoked request (which gets completion.candidates of them) and move once it answers.
function M.cycle(delta, bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local st = M.state[bufnr]
  if st and st.items and #st.items >= 2 then
    st.index = (st.index - 1 + delta) % #st.items + 1
    render(bufnr)
    return true
  end
  return M.request(true, bufnr, delta) == true
end

--- A change or a move in insert mode: ask again (debounced) unless suggestions are manual;
--- either way the shown suggestion is stale, unless the change was a partial accept.
local function changed(bufnr)
  local st = M.state[bufnr]
  if st and st.items and st.changedtick == vim.api.nvim_buf_get_changedtick(bufnr) then
    local c = vim.api.nvim_win_get_cursor(0)
    if st.row == c[1] - 1 and st.col == c[2] then
      return
    end
  end
  if M.manual(bufnr) then
    if timers[bufnr] then timers[bufnr]:stop() end
    M.clear(bufnr)
    return
  end
  local t = timers[bufnr]
  if t then
    t:stop()
  else
    t = vim.uv.new_timer()
    timers[bufnr] = t
  end
  M.clear(bufnr)
  t:start(M.opts.debounce_ms, 0, vim.schedule_wrap(function()
    if vim.api.nvim_buf_is_valid(bufnr) and vim.api.nvim_get_current_buf() == bufnr
      and not M.manual(bufnr) then
      M.request(false, bufnr)
    end
  end))
end

local function feed(key)
  vim.api.nvim_feedkeys(vim.keycode(key), "n", false)
end

local function attach_ghost(bufnr, group)
  local km = M.opts.keymaps or {}
  local map = function(lhs, fn, desc)
    if lhs and lhs ~= "" then
      vim.keymap.set("i", lhs, function()
        if not fn() then
          feed(lhs)
        end
      end, { buffer = bufnr, desc = desc })
    end
  end
  map(km.accept, function() return M.accept(bufnr) end, "council: accept suggestion")
  map(km.accept_word, function() return M.accept_part("word", bufnr) end, "council: accept the next word")
  map(km.accept_line, function() return M.accept_part("line", bufnr) end, "council: accept the line")
  map(km.dismiss, function()
    if M.visible(bufnr) then M.clear(bufnr) return true end
  end, "council: dismiss suggestion")
  map(km.next, function() return M.cycle(1, bufnr) end, "council: next suggestion")
  map(km.prev, function() return M.cycle(-1, bufnr) end, "council: previous suggestion")
  map(km.trigger, function() M.request(true, bufnr) return true end, "council: suggest")
  vim.api.nvim_create_autocmd({ "TextChangedI", "TextChangedP" }, {
    group = group, buffer = bufnr, callback = function() changed(bufnr) end,
  })
  vim.api.nvim_create_autocmd("CursorMovedI", {
    group = group, buffer = bufnr,
    callback = function()
      local st = M.state[bufnr]
      local c = vim.api.nvim_win_get_cursor(0)
      if st and (st.row ~= c[1] - 1 or st.col ~= c[2]) then
        changed(bufnr)
      end
    end,
  })
  vim.api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    group = group, buffer = bufnr,
    callback = function()
      if timers[bufnr] then timers[bufnr]:stop() end
      M.clear(bufnr)
    end,
  })
end

function M.native_available()
  return vim.lsp.inline_completion ~= nil and vim.lsp.inline_completion.enable ~= nil
end

function M.setup(opts, group)
  M.opts = opts
  -- manual trigger and partial accept are the ghost-text mode's: "auto" picks it for them
  local settings = require("council").options.settings or {}
  local manual = opts.auto_trigger == false
    or (type(settings.completion) == "table" and settings.completion.trigger == "manual")
  local use_native = (opts.mode == "native")
    or (opts.mode == "auto" and M.native_available() and not manual)
  M.mode = use_native and "native" or "ghost"
  vim.api.nvim_create_user_command("CouncilExplain", function() require("council.explain").open() end,
    { desc = "Council: explain the last inline completion" })
  vim.api.nvim_create_autocmd("LspAttach", {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if not client or client.name ~= "council" then
        return
      end
      if M.server_trigger[client.id] == nil then
        M.server_trigger[client.id] = false -- asked once per client
        M.learn(client)
      end
      if use_native then
        vim.lsp.inline_completion.enable(true, { bufnr = ev.buf })
        local km = opts.keymaps or {}
        if km.accept then
          vim.keymap.set("i", km.accept, function()
            if not vim.lsp.inline_completion.get() then
              return km.accept
            end
          end, { expr = true, buffer = ev.buf, desc = "council: accept suggestion" })
        end
        if km.next then
          vim.keymap.set("i", km.next, function() vim.lsp.inline_completion.select({ count = 1 }) end,
            { buffer = ev.buf })
        end
        if km.prev then
          vim.keymap.set("i", km.prev, function() vim.lsp.inline_completion.select({ count = -1 }) end,
            { buffer = ev.buf })
        end
      else
        attach_ghost(ev.buf, group)
      end
    end,
  })
end

return M
