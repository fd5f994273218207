//! `dialer campaign leads.csv`: written once the campaign engine lands.

use crate::cli::{CampaignArgs, ServerArgs};
use crate::error::{AppError, Exit};
use crate::settings::Sources;

pub async fn run(_: &ServerArgs, _: &CampaignArgs, _: Sources, _: bool) -> Result<Exit, AppError> {
    Err(AppError::Other("campaigns are not wired yet".into()))
}
