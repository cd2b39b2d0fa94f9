-- Driven by tests/test_neovim.py: runs one scenario ($COUNCIL_SCENARIO) and writes JSON
-- results to $COUNCIL_RESULT, then quits. Every wait has a timeout; failures are recorded.
local out = { events = {}, errors = {}, progress = {} }
local ws = os.getenv("COUNCIL_WS")

local function finish()
  out.messages = _G.council_messages or {}
  local f = assert(io.open(os.getenv("COUNCIL_RESULT"), "w"))
  f:write(vim.json.encode(out))
  f:close()
  vim.cmd("qall!")
end

local function check(ok, what)
  if not ok then
    table.insert(out.errors, what)
  end
  return ok
end

vim.api.nvim_create_autocmd("LspProgress", {
  callback = function(ev)
    local v = ev.data.params.value or {}
    table.insert(out.progress, { token = ev.data.params.token, kind = v.kind, title = v.title,
      message = v.message, percentage = v.percentage })
  end,
})

local function attach(path)
  vim.cmd.edit(path)
  local ok = vim.wait(20000, function()
    return #vim.lsp.get_clients({ name = "council", bufnr = 0 }) > 0
      and vim.lsp.get_clients({ name = "council", bufnr = 0 })[1].initialized
  end, 50)
  check(ok, "council client did not attach/initialize within 20 s")
  return ok
end

local scenarios = {}

function scenarios.code_actions()
  if not attach(ws .. "/mathx.py") then return end
  vim.api.nvim_win_set_cursor(0, { 2, 4 })
  local titles, kinds
  local orig = vim.ui.select
  vim.ui.select = function(items, opts, on_choice)
    titles, kinds = {}, {}
    for _, it in ipairs(items) do
      local action = it.action or it
      table.insert(titles, action.title)
      table.insert(kinds, action.kind or vim.NIL)
    end
    on_choice(nil)
  end
  vim.lsp.buf.code_action()
  check(vim.wait(10000, function() return titles ~= nil end, 20), "code_action() never listed items")
  vim.ui.select = orig
  out.titles, out.kinds = titles, kinds
  out.commands = vim.fn.getcompletion("Council", "command")
end

function scenarios.add_tests()
  if not attach(ws .. "/mathx.py") then return end
  vim.api.nvim_win_set_cursor(0, { 2, 4 })
  local result
  require("council").exec("council.addTests", require("council").doc_args(nil), function(err, res)
    result = { err = err, res = res }
  end)
  check(vim.wait(25000, function() return result ~= nil end, 50), "council.addTests did not answer in 25 s")
  out.result = result
  local test_path = ws .. "/tests/test_mathx.py"
  local bufnr = vim.fn.bufnr(test_path)
  out.test_buffer = bufnr ~= -1
  if bufnr ~= -1 then
    out.test_text = table.concat(vim.api.nvim_buf_get_lines(bufnr, 0, -1, false), "\n")
    vim.api.nvim_buf_call(bufnr, function() vim.cmd("silent write") end)
  end
  out.active_tokens = vim.tbl_count(require("council").progress[next(require("council").progress) or 0] or {})
end

function scenarios.command_add_tests()
  if not attach(ws .. "/mathx.py") then return end
  vim.api.nvim_win_set_cursor(0, { 2, 4 })
  vim.cmd("CouncilAddTests")
  local test_path = ws .. "/tests/test_mathx.py"
  check(vim.wait(25000, function()
    local b = vim.fn.bufnr(test_path)
    return b ~= -1 and table.concat(vim.api.nvim_buf_get_lines(b, 0, -1, false), "\n"):find("def test_") ~= nil
  end, 50), "the :CouncilAddTests edit never landed in tests/test_mathx.py")
  vim.wait(5000, function()
    for _, p in ipairs(out.progress) do if p.kind == "end" then return true end end
  end, 50)
  check(vim.wait(10000, function()
    for _, m in ipairs(_G.council_messages or {}) do if m:find("council.addTests", 1, true) then return true end end
  end, 50), "no result message for :CouncilAddTests")
  local b = vim.fn.bufnr(test_path)
  if b ~= -1 then out.test_text = table.concat(vim.api.nvim_buf_get_lines(b, 0, -1, false), "\n") end
end

-- :CouncilGenerate with no selection, the cursor inside a method: the plugin sends the
-- position and the server resolves `Stack.push` (it used to send the bare name `push`).
function scenarios.generate_method()
  if not attach(ws .. "/shapes.py") then return end
  vim.api.nvim_win_set_cursor(0, { 7, 8 })
  vim.cmd("CouncilGenerate")
  check(vim.wait(25000, function()
    return table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n"):find("self.items.append") ~= nil
  end, 50), "the :CouncilGenerate edit never landed in shapes.py")
  check(vim.wait(10000, function()
    for _, m in ipairs(_G.council_messages or {}) do if m:find("council.generate", 1, true) then return true end end
  end, 50), "no result message for :CouncilGenerate")
  out.text = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
end

function scenarios.cancel()
  if not attach(ws .. "/mathx.py") then return end
  vim.api.nvim_win_set_cursor(0, { 2, 4 })
  local result
  require("council").exec("council.addTests", { uri = vim.uri_from_bufnr(0), symbol = "add" },
    function(err, res) result = { err = err, res = res } end)
  check(vim.wait(15000, function() return next(require("council").progress) ~= nil
    and next(select(2, next(require("council").progress))) ~= nil end, 20), "no council progress began")
  vim.cmd("CouncilCancel")
  check(vim.wait(15000, function() return result ~= nil end, 50), "cancelled run did not answer")
  out.result = result
end

function scenarios.inline()
  if not attach(ws .. "/m.py") then return end
  local inline = require("council.inline")
  out.mode = inline.mode
  vim.api.nvim_win_set_cursor(0, { 1, 6 }) -- print(|)
  inline.request(false)
  check(vim.wait(10000, function() return inline.visible() end, 20), "no ghost text within 10 s")
  out.ghost = inline.ghost_text()
  out.accepted = inline.accept()
  out.line = vim.api.nvim_get_current_line()
  out.ghost_after = inline.ghost_text()
  -- the debounced insert-mode path: type on line 2 and let TextChangedI trigger a request
  vim.api.nvim_buf_set_lines(0, 1, 2, false, { "def add(a, b):", "    return " })
  vim.api.nvim_win_set_cursor(0, { 3, 10 })
  -- what typing does in insert mode: the buffer changes, then TextChangedI fires (debounced)
  vim.o.virtualedit = "onemore" -- normal mode may sit past the end, as the insert cursor does
  vim.api.nvim_win_set_cursor(0, { 3, 11 })
  vim.api.nvim_exec_autocmds("TextChangedI", { buffer = 0 })
  check(vim.wait(10000, function() return inline.visible() end, 20), "no ghost text from typing")
  out.ghost2 = inline.ghost_text()
  local tab = vim.fn.maparg("<Tab>", "i", false, true)
  out.tab_mapped = tab.callback ~= nil
  if tab.callback then tab.callback() end
  vim.wait(2000, function() return not inline.visible() end, 20)
  out.line2 = vim.api.nvim_buf_get_lines(0, 2, 3, false)[1]
end

function scenarios.health()
  if not attach(ws .. "/mathx.py") then return end
  vim.cmd("checkhealth council")
  out.health = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
end

-- :CouncilRuns after a Generate run: the run with its stages, candidate and tests; <CR> on
-- the candidate opens the diff, <CR> on the run its report.
function scenarios.runs()
  if not attach(ws .. "/mathx.py") then return end
  local runs = require("council.runs")
  vim.api.nvim_win_set_cursor(0, { 2, 4 })
  vim.cmd("CouncilGenerate")
  check(vim.wait(25000, function()
    for _, m in ipairs(_G.council_messages or {}) do if m:find("council.generate", 1, true) then return true end end
  end, 50), "no result message for :CouncilGenerate")
  out.changes_before = runs.changes
  vim.cmd("CouncilRuns")
  local function listed()
    return table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
  end
  check(vim.wait(10000, function() return listed():find("Candidates", 1, true) ~= nil end, 50),
    ":CouncilRuns never listed the run's candidates")
  out.list = listed()
  out.list_buffer = vim.api.nvim_buf_get_name(0)
  -- a council/runsChanged while the list is shown redraws it
  local drawn = runs.rendered
  vim.lsp.handlers["council/runsChanged"](nil, { sessionId = "x", status = "running", event = "started" }, {})
  out.redrawn = vim.wait(5000, function() return runs.rendered > drawn end, 20)
  local cand = vim.fn.search("c1 (pass 1)", "n")
  check(cand > 0, "no candidate line")
  if cand == 0 then return end
  vim.api.nvim_win_set_cursor(0, { cand, 4 })
  vim.api.nvim_feedkeys(vim.keycode("<CR>"), "x", false)
  check(vim.wait(5000, function() return vim.wo.diff end, 20), "<CR> on the candidate opened no diff")
  out.diff = {}
  for _, win in ipairs(vim.api.nvim_tabpage_list_wins(0)) do
    local b = vim.api.nvim_win_get_buf(win)
    table.insert(out.diff, { name = vim.api.nvim_buf_get_name(b), diff = vim.wo[win].diff,
      text = table.concat(vim.api.nvim_buf_get_lines(b, 0, -1, false), "\n") })
  end
  vim.cmd("tabclose")
  local list_win = vim.fn.bufwinid("council://runs")
  vim.api.nvim_set_current_win(list_win)
  vim.api.nvim_win_set_cursor(0, { 3, 0 }) -- the run's first line
  vim.api.nvim_feedkeys(vim.keycode("<CR>"), "x", false)
  check(vim.wait(5000, function() return vim.api.nvim_buf_get_name(0):find("report.md", 1, true) ~= nil end, 20),
    "<CR> on the run opened no report")
  out.report = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
  out.changes = runs.changes
end

-- Inline completions: trigger and accept control, and why there was no suggestion.

local function stats(params)
  local client = vim.lsp.get_clients({ name = "council", bufnr = 0 })[1]
  local resp = client and client:request_sync("council/inlineStats", params or {}, 5000)
  return resp and resp.result or {}
end

local function press(lhs)
  local map = vim.fn.maparg(lhs, "i", false, true)
  check(map.callback ~= nil, "no insert-mode mapping for " .. lhs)
  if map.callback then map.callback() end
end

-- completion.trigger = "manual" in the council.toml: the plugin learns it from the server,
-- sends no automatic request while typing, and the invoke key asks.
function scenarios.manual()
  if not attach(ws .. "/m.py") then return end
  local inline = require("council.inline")
  check(vim.wait(10000, function() return inline.manual(0) end, 20), "the plugin never learnt the manual trigger")
  vim.api.nvim_buf_set_lines(0, 0, -1, false, { "def add(a, b):", "    return " })
  vim.o.virtualedit = "onemore"
  vim.api.nvim_win_set_cursor(0, { 2, 11 })
  vim.api.nvim_exec_autocmds("TextChangedI", { buffer = 0 })
  -- a negative: no request may go out; wait six times the test's debounce (50 ms) for one
  vim.wait(300)
  out.requests_after_typing = #(stats().requests or {})
  out.pending = inline.state[vim.api.nvim_get_current_buf()] ~= nil
  press("<M-\\>")
  check(vim.wait(10000, function() return inline.visible() end, 20), "no ghost text after the invoke key")
  out.ghost = inline.ghost_text()
  out.triggers = vim.tbl_map(function(r) return r.trigger end, stats().requests or {})
end

-- completion.candidates = 2: next asks again as invoked and shows the second candidate
function scenarios.cycle()
  if not attach(ws .. "/m.py") then return end
  local inline = require("council.inline")
  vim.api.nvim_buf_set_lines(0, 0, -1, false, { "def add(a, b):", "    return " })
  vim.o.virtualedit = "onemore"
  vim.api.nvim_win_set_cursor(0, { 2, 11 })
  inline.request(false)
  check(vim.wait(10000, function() return inline.visible() end, 20), "no ghost text")
  out.ghosts = { inline.ghost_text() }
  press("<M-]>")
  check(vim.wait(10000, function()
    local st = inline.state[vim.api.nvim_get_current_buf()]
    return st and st.items and #st.items == 2 and inline.visible()
  end, 20), "the invoked request did not bring two candidates")
  table.insert(out.ghosts, inline.ghost_text())
  press("<M-[>")
  table.insert(out.ghosts, inline.ghost_text())
  press("<M-]>")
  table.insert(out.ghosts, inline.ghost_text())
  out.triggers = vim.tbl_map(function(r) return r.trigger end, stats().requests or {})
end

-- an empty answer, then :checkhealth and :CouncilExplain say why
function scenarios.explain()
  if not attach(ws .. "/m.py") then return end
  local inline = require("council.inline")
  vim.api.nvim_win_set_cursor(0, { 1, 6 }) -- print(|)
  inline.request(false)
  check(vim.wait(10000, function()
    local last = stats({ uri = vim.uri_from_bufnr(0) }).lastForDocument
    return last ~= nil and last ~= vim.NIL
  end, 20), "the server recorded no request")
  vim.cmd("CouncilExplain")
  check(vim.wait(10000, function() return vim.bo.filetype == "markdown" end, 20), ":CouncilExplain opened no buffer")
  out.explain_name = vim.api.nvim_buf_get_name(0)
  out.explain = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
  out.explain_buftype = vim.bo.buftype
  vim.cmd("checkhealth council")
  out.health = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
end

local ok, err = xpcall(scenarios[os.getenv("COUNCIL_SCENARIO")], debug.traceback)
if not ok then
  table.insert(out.errors, tostring(err))
end
finish()
