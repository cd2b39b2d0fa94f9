-- :checkhealth council
local M = {}

local function base_cmd()
  local opts = require("council").options
  local cmd = opts.cmd
  if type(cmd) ~= "table" then
    return nil
  end
  local base = vim.list_slice(cmd, 1, #cmd)
  if base[#base] == "lsp" then
    table.remove(base)
  end
  return base
end

--- The last completion's outcome: why there was (no) suggestion.
function M.last_outcome(r)
  local h = vim.health
  local last = r.lastForDocument ~= vim.NIL and r.lastForDocument or nil
  last = last or (r.last ~= vim.NIL and r.last or nil)
  if not last then
    h.info("last completion: none yet (type in a Python buffer, or press the invoke key)")
    return
  end
  local name = vim.fn.fnamemodify(vim.uri_to_fname(last.uri), ":t")
  local text = ("last completion: %s%s (%s request in %s, %.0f ms); :CouncilExplain shows why")
    :format(last.items > 0 and "" or "no suggestion — ", last.outcome, last.trigger, name, last.handlerMs)
  if last.items > 0 then
    h.ok(text)
  elseif last.reason == "error" or last.reason == "unavailable" or last.reason == "timeout" then
    h.warn(text)
  else
    h.info(text)
  end
end

function M.check()
  local h = vim.health
  h.start("council: Neovim")
  if vim.fn.has("nvim-0.11") == 1 then
    h.ok("Neovim " .. tostring(vim.version()))
  else
    h.error("Neovim >= 0.11 is required (vim.lsp.config / vim.lsp.enable)")
  end
  local inline = require("council.inline")
  h.info("inline completions: " .. (inline.mode or "not set up")
    .. (inline.native_available() and " (native vim.lsp.inline_completion available)" or " (extmark ghost text)"))

  h.start("council: server")
  local base = base_cmd()
  if not base then
    h.warn("cmd is a function; cannot check the binary")
    return
  end
  local exe = vim.fn.exepath(base[1])
  if exe == "" then
    h.error(("server binary %q not found on $PATH"):format(base[1]),
      { "pip install the project (it provides `council`), or set cmd in require('council').setup()" })
    return
  end
  h.ok("server binary: " .. exe .. " (cmd: " .. table.concat(require("council").options.cmd, " ") .. ")")
  local client = require("council").client()
  if client then
    local info = client.server_info or {}
    h.ok(("server running (id %d): %s %s"):format(client.id, info.name or "council", info.version or ""))
  else
    local ok, res = pcall(function()
      return vim.system(vim.list_extend(vim.deepcopy(base), { "--help" }), { text = true }):wait(15000)
    end)
    if ok and res.code == 0 then
      h.ok("`" .. table.concat(base, " ") .. " --help` runs (server not started yet: open a Python file)")
    else
      h.error("`" .. table.concat(base, " ") .. " --help` failed: " .. (ok and (res.stderr or "") or tostring(res)))
    end
  end

  h.start("council: providers")
  local ok, res = pcall(function()
    return vim.system(vim.list_extend(vim.deepcopy(base), { "providers", "--json" }), { text = true }):wait(20000)
  end)
  if not ok or res.code == nil or (res.signal and res.signal ~= 0) then
    h.warn("`council providers --json` timed out or failed to run")
  else
    local dok, rows = pcall(vim.json.decode, res.stdout or "")
    if not dok or type(rows) ~= "table" then
      h.error("`council providers --json` returned no JSON: " .. (res.stderr or ""))
    else
      for _, r in ipairs(rows) do
        local line = ("%s:%s [%s] %s"):format(r.provider, r.model, table.concat(r.roles or {}, ","),
          r.latency_ms ~= vim.NIL and r.latency_ms and (math.floor(r.latency_ms) .. " ms") or "")
        if r.health == "ok" or r.health == "healthy" then
          h.ok(line)
        else
          h.warn(line .. " " .. tostring(r.health) .. ": " .. tostring(r.error ~= vim.NIL and r.error or ""))
        end
      end
    end
  end

  h.start("council: completion model")
  if client then
    -- since: past every record, so only the summary comes back; uri: the buffer that asked
    -- last (:checkhealth runs in a buffer of its own)
    local params = { since = 2147483647 }
    local last_buf = inline.last_bufnr
    if last_buf and vim.api.nvim_buf_is_valid(last_buf) then
      params.uri = vim.uri_from_bufnr(last_buf)
    end
    local resp = client:request_sync("council/inlineStats", params, 5000)
    if resp and resp.result then
      local r = resp.result
      local err = r.error ~= vim.NIL and r.error or nil
      if r.ready then
        h.ok(("backend %s ready"):format(tostring(r.backend)))
      elseif err then
        h.error(("backend %s: %s"):format(tostring(r.backend), tostring(err)))
      else
        h.warn(("backend %s loading"):format(tostring(r.backend)))
      end
      h.info(("trigger: %s%s, candidates: %s"):format(tostring(r.trigger),
        inline.manual(last_buf) and " (only the invoke key asks)" or "", tostring(r.candidates)))
      M.last_outcome(r)
    else
      h.warn("council/inlineStats did not answer")
    end
  else
    h.info("start the server (open a Python file) to see the completion backend's status")
  end
end

return M
