-- :CouncilRuns: every council run the server remembers, live and past, in a scratch buffer.
--
-- The server keeps the runs in flight and the last 50 finished (`council/runs`, `council/run`,
-- README "The language server") and announces each start, stage and end with
-- `council/runsChanged`; the buffer redraws on it while it is shown. Each run lists its
-- stages (role, provider:model, time, tokens, cost), its candidates and its test results
-- case by case. <CR> on a run opens its report (the server's Markdown of the whole run, the
-- transcript included); <CR> on a candidate opens a tab with the target file against the file
-- as that candidate would leave it, in diff mode. `r` redraws, `q` closes.
local M = {}

M.detail_limit = 10 -- runs shown with their stages, candidates and tests (newest first)
M.changes = 0 -- council/runsChanged notifications seen (the tests read it)
M.rendered = 0 -- redraws done (likewise)

local state = { buf = nil, lines = {}, details = {}, timer = nil }

local function council()
  return require("council")
end

local function who(x)
  return (x.provider and x.provider ~= vim.NIL) and (x.provider .. ":" .. x.model) or "-"
end

local function secs(s)
  if s == nil or s == vim.NIL then
    return "-"
  end
  return s < 10 and ("%.2f s"):format(s) or ("%.1f s"):format(s)
end

local function money(usd)
  return ("$%.4f"):format(usd or 0)
end

local function str(v)
  return (v == nil or v == vim.NIL) and "" or tostring(v)
end

local MARK = { passed = "✓", approved = "✓", ok = "✓", running = "…", best_effort = "~",
  cancelled = "⊘", unfinished = "⊘", skipped = "⊘" }

local function mark(status)
  return MARK[status] or "✗"
end

--- The two sides of a candidate's diff, as in the VS Code view: the target file before the
--- run, and after applying the candidate (`proposed`), or the candidate's own file.
function M.diff_sides(run, c)
  local first = c.files[1] or { path = "code.py", content = "" }
  local original = run.original ~= vim.NIL and run.original or nil
  local proposed = c.proposed ~= vim.NIL and c.proposed or nil
  local path = (proposed and original) and original.path or first.path
  local before = ""
  if original and (proposed or first.path == original.path) then
    before = original.text
  end
  return path, before, proposed or first.content
end

local function run_lines(out, meta, summary, d)
  local function add(line, info)
    table.insert(out, line)
    meta[#out] = info
  end
  local session = summary.sessionId
  add(("%s %s  [%s]  %s · %d tok · %s  (%s)"):format(mark(summary.status), summary.title,
    summary.status, secs(summary.seconds), summary.tokens, money(summary.costUsd), session),
    { kind = "run", session = session })
  if str(summary.stage) ~= "" then
    add("  now: " .. summary.stage, { kind = "run", session = session })
  end
  if str(summary.summary) ~= "" then
    add("  " .. summary.summary:gsub("\n", " "), { kind = "run", session = session })
  end
  if not d then
    return
  end
  add("  Stages", { kind = "run", session = session })
  for _, s in ipairs(d.stages) do
    add(("    %s %-28s %-22s %8s %7d tok  %s"):format(mark(s.status), s.stage .. " · " .. s.role
      .. (s.passNo > 1 and (" (pass " .. s.passNo .. ")") or ""), who(s),
      s.status == "running" and "running" or secs(s.seconds), s.tokens, money(s.costUsd)),
      { kind = "run", session = session })
  end
  if #d.candidates > 0 then
    add("  Candidates (<CR>: diff)", { kind = "run", session = session })
    for _, c in ipairs(d.candidates) do
      local total = c.passed + c.failed
      add(("    %s (pass %d)%s  %s  %s"):format(c.id, c.passNo, c.chosen and " ★ chosen" or "", who(c),
        total > 0 and ("tests " .. c.passed .. "/" .. total) or "no tests"),
        { kind = "candidate", session = session, id = c.id })
    end
  end
  if #d.tests > 0 then
    add("  Tests", { kind = "run", session = session })
    for _, t in ipairs(d.tests) do
      local message = str(t.message):gsub("%s+", " "):sub(1, 100)
      add(("    %s %s::%s  %s  %s%s%s"):format(mark(t.outcome), t.suite, t.test, str(t.candidate),
        t.outcome, t.disputed and " (disputed)" or "", message ~= "" and ("  " .. message) or ""),
        { kind = "run", session = session })
    end
  end
  if #d.transcript > 0 then
    add(("  Transcript: %d calls (<CR>: the report)"):format(#d.transcript), { kind = "run", session = session })
  end
end

local function render(runs)
  local buf = state.buf
  if not buf or not vim.api.nvim_buf_is_valid(buf) then
    return
  end
  local out = { ("Council runs: %d  (<CR>: report or diff · r: refresh · q: close)"):format(#runs), "" }
  local meta = {}
  if #runs == 0 then
    table.insert(out, "No council runs yet: :CouncilGenerate, :CouncilDebug, :CouncilAddTests, :CouncilRun.")
  end
  for _, summary in ipairs(runs) do
    run_lines(out, meta, summary, state.details[summary.sessionId])
    table.insert(out, "")
  end
  state.lines = meta
  vim.bo[buf].modifiable = true
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, out)
  vim.bo[buf].modifiable = false
  M.rendered = M.rendered + 1
end

--- Ask for the list and the newest runs' details, then redraw once they have all answered.
function M.refresh()
  local client = council().client()
  if not client then
    render({})
    return
  end
  client:request("council/runs", {}, function(err, res)
    if err or type(res) ~= "table" then
      return
    end
    local runs = res.runs
    local pending = math.min(#runs, M.detail_limit)
    if pending == 0 then
      render(runs)
      return
    end
    local fresh = {} -- swapped in whole: a <CR> meanwhile still finds the last answers
    for i = 1, pending do
      local session = runs[i].sessionId
      client:request("council/run", { sessionId = session }, function(e, d)
        fresh[session] = (not e and type(d) == "table") and d or nil
        pending = pending - 1
        if pending == 0 then
          state.details = fresh
          render(runs)
        end
      end)
    end
  end)
end

--- A file's text as buffer lines (its final newline ends the last line; no empty line after).
local function text_lines(text)
  local lines = vim.split(text, "\n", { plain = true })
  if #lines > 1 and lines[#lines] == "" then
    table.remove(lines)
  end
  return lines
end

local function scratch(name, lines, filetype)
  -- by exact name: bufnr() would take the name as a pattern
  local buf = vim.iter(vim.api.nvim_list_bufs()):find(function(b)
    return vim.api.nvim_buf_get_name(b) == name
  end)
  if not buf then
    buf = vim.api.nvim_create_buf(false, true)
    vim.api.nvim_buf_set_name(buf, name)
  end
  vim.bo[buf].buftype, vim.bo[buf].bufhidden, vim.bo[buf].swapfile = "nofile", "wipe", false
  vim.bo[buf].modifiable = true
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modifiable, vim.bo[buf].filetype = false, filetype
  return buf
end

local function open_report(session)
  council().client():request("council/run", { sessionId = session, markdown = true }, function(err, d)
    if err or type(d) ~= "table" then
      vim.notify("council: " .. (err and err.message or "no such run"), vim.log.levels.WARN)
      return
    end
    vim.cmd("split")
    vim.api.nvim_win_set_buf(0, scratch("council://run/" .. session .. "/report.md",
      text_lines(d.markdown), "markdown"))
  end)
end

local function open_diff(session, id)
  local d = state.details[session]
  local c = d and vim.iter(d.candidates):find(function(x) return x.id == id end)
  if not c then
    return
  end
  local path, before, after = M.diff_sides(d, c)
  local ft = vim.filetype.match({ filename = path }) or ""
  vim.cmd("tabnew")
  local left = scratch(("council://run/%s/original/%s"):format(session, path), text_lines(before), ft)
  vim.api.nvim_win_set_buf(0, left)
  vim.cmd("diffthis")
  vim.cmd("rightbelow vsplit") -- the candidate on the right, whatever 'splitright' says
  local right = scratch(("council://run/%s/%s/%s"):format(session, id, path), text_lines(after), ft)
  vim.api.nvim_win_set_buf(0, right)
  vim.cmd("diffthis")
end

--- <CR>: the report of the run under the cursor, or the diff of the candidate under it.
function M.activate()
  local info = state.lines[vim.api.nvim_win_get_cursor(0)[1]]
  if not info then
    return
  end
  if info.kind == "candidate" then
    open_diff(info.session, info.id)
  else
    open_report(info.session)
  end
end

function M.open()
  if not council().client() then
    vim.notify("council: the language server is not running", vim.log.levels.ERROR)
    return
  end
  if not (state.buf and vim.api.nvim_buf_is_valid(state.buf)) then
    state.buf = scratch("council://runs", {}, "councilruns")
    vim.bo[state.buf].bufhidden = "hide"
    local map = function(lhs, fn) vim.keymap.set("n", lhs, fn, { buffer = state.buf, nowait = true }) end
    map("<CR>", M.activate)
    map("r", M.refresh)
    map("q", "<Cmd>close<CR>")
  end
  if vim.fn.bufwinid(state.buf) == -1 then
    vim.cmd("botright split")
    vim.api.nvim_win_set_buf(0, state.buf)
  end
  M.refresh()
end

--- `council/runsChanged`: redraw (at most every 200 ms) while the list is on screen.
local function changed()
  M.changes = M.changes + 1
  if not (state.buf and vim.fn.bufwinid(state.buf) ~= -1) or state.timer then
    return
  end
  state.timer = vim.defer_fn(function()
    state.timer = nil
    M.refresh()
  end, 200)
end

function M.setup()
  vim.lsp.handlers["council/runsChanged"] = function()
    changed()
  end
  vim.api.nvim_create_user_command("CouncilRuns", M.open, { desc = "Council: the runs, live and past" })
end

return M
