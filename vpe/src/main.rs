//! `vpe`: renkei's VM hosting command (user commands, `vpe serve`, `vpe agent`); see `vpe --help`.

fn main() -> std::process::ExitCode {
    match vpe::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vpe: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
